//! The web catalog's pages rendered from a sample catalog: structure,
//! escaping, filters, accessibility basics and an index snapshot. Pure: no
//! server, no snapshot loader.
//!
//! `serve_sample_for_browser` (ignored) serves the sample on a local port so
//! that `hub/tests/browser/check_pages.py` can be run against it while
//! developing the pages:
//! `LABFORGE_WEB_DEV_ADDR=127.0.0.1:8765 cargo test -p labforge-hub --test web -- --ignored --nocapture`.

use labforge_core::scan::policy::Summary;
use labforge_hub::doc::{
    CatalogDoc, ChangeDoc, ChangesDoc, Declared, ImageDoc, PackageDoc, RollbackDoc, ScanDoc,
    Unavailable, VersionDoc,
};
use labforge_hub::web::{self, Filters, Site, Web};

const HOSTILE: &str = "<script>alert(1)</script>";

fn digest(seed: char) -> String {
    format!("sha256:{}", seed.to_string().repeat(64))
}

fn pkg(kind: &str, name: &str, version: &str) -> PackageDoc {
    PackageDoc {
        kind: kind.into(),
        name: name.into(),
        version: version.into(),
    }
}

fn change(kind: &str, name: &str, old: &str, new: &str) -> ChangeDoc {
    ChangeDoc {
        kind: kind.into(),
        name: name.into(),
        old: old.into(),
        new: new.into(),
    }
}

fn scan(critical: usize, high: usize) -> ScanDoc {
    ScanDoc {
        verdict: if critical == 0 { "pass" } else { "fail" }.into(),
        summary: Summary {
            critical,
            high,
            medium: 3,
            low: 7,
            unknown: 0,
            blocking: 0,
            waived: 1,
        },
        scanned_at: "2026-05-01T09:30:00Z".into(),
    }
}

fn version(name: &str, seed: char, published: &str, size: u64) -> VersionDoc {
    let d = digest(seed);
    VersionDoc {
        reference: format!("registry.example.edu/labforge/{name}@{d}"),
        digest: d,
        published_at: published.into(),
        built_at: Some(published.replace("T10", "T09")),
        content_tag: Some(format!("content-{seed}")),
        size_bytes: Some(size),
        scan: Some(scan(0, 0)),
        changes: None,
    }
}

struct Spec {
    name: &'static str,
    display: &'static str,
    description: &'static str,
    gpu: &'static [u32],
    cuda: Option<&'static str>,
    frameworks: &'static [&'static str],
    groups: &'static [&'static str],
    pip: &'static [&'static str],
    apt: &'static [&'static str],
}

fn image(spec: &Spec) -> ImageDoc {
    let gpu = !spec.gpu.is_empty();
    ImageDoc {
        name: spec.name.into(),
        family: spec.name.split('-').next().unwrap_or(spec.name).into(),
        variant: if gpu { "cuda" } else { "cpu" }.into(),
        axes: vec![(
            "accelerator".into(),
            if gpu { "cuda" } else { "cpu" }.into(),
        )],
        slug: spec.name.into(),
        display_name: spec.display.into(),
        description: spec.description.into(),
        parent: if gpu { "cuda-base" } else { "foundation" }.into(),
        gpu,
        gpu_choices: spec.gpu.to_vec(),
        gpu_default: spec.gpu.first().copied(),
        cuda: spec.cuda.map(Into::into),
        cudnn: spec.cuda.map(|_| "9.1.0".into()),
        min_driver: spec.cuda.map(|_| "550.54".into()),
        os: Some("Ubuntu 22.04".into()),
        frameworks: spec.frameworks.iter().map(|s| s.to_string()).collect(),
        groups: spec.groups.iter().map(|s| s.to_string()).collect(),
        cpu_limit: Some(8.0),
        cpu_guarantee: Some(2.0),
        mem_limit: Some("32G".into()),
        mem_guarantee: Some("8589934592".into()),
        owners: vec!["ml-team".into()],
        issue: None,
        issue_url: None,
        declared: Declared {
            apt: spec.apt.iter().map(|s| s.to_string()).collect(),
            pip: spec.pip.iter().map(|s| s.to_string()).collect(),
            conda: vec![],
            vscode_extensions: vec!["ms-python.python".into()],
        },
        launch_url: format!("https://hub.example.edu/hub/spawn?profile={}", spec.name),
        request_change_url: Some(format!(
            "https://github.com/example/labforge-catalog/issues/new?template=change.yml&image={}",
            spec.name
        )),
        default: false,
        versions: vec![version(
            spec.name,
            'a',
            "2026-05-01T10:00:00Z",
            5_300_000_000,
        )],
        rollback: None,
        pending: None,
        packages: None,
    }
}

/// Five images: two GPU (one with three versions, changes and a large
/// package list), one GPU held by a rollback, two CPU (one with hostile
/// strings and no request-change link).
fn sample() -> CatalogDoc {
    let mut dl = image(&Spec {
        name: "deeplearning-cuda",
        display: "Deep learning (PyTorch)",
        description: "PyTorch with CUDA for training on the cluster's GPUs.",
        gpu: &[1, 2, 4],
        cuda: Some("12.4.1"),
        frameworks: &["pytorch", "transformers"],
        groups: &[],
        pip: &["torch==2.3.1", "transformers>=4.40"],
        apt: &["ffmpeg"],
    });
    dl.default = true;
    dl.issue = Some(42);
    dl.issue_url = Some("https://github.com/example/labforge-catalog/issues/42".into());
    let mut packages: Vec<PackageDoc> = (0..180)
        .map(|i| pkg("deb", &format!("libsample{i:03}"), &format!("1.{i}-1")))
        .collect();
    packages.extend((0..60).map(|i| pkg("pypi", &format!("pysample{i:02}"), &format!("0.{i}.0"))));
    packages.push(pkg("pypi", "torch", "2.3.1"));
    packages.push(pkg("conda", "cudatoolkit", "12.4"));
    dl.packages = Some(packages);
    let mut v1 = version(
        "deeplearning-cuda",
        'c',
        "2026-05-01T10:00:00Z",
        5_300_000_000,
    );
    v1.changes = Some(ChangesDoc {
        against: digest('b'),
        added: vec![pkg("pypi", "accelerate", "0.30.1")],
        removed: vec![
            pkg("deb", "libold1", "1.0-1"),
            pkg("deb", "libold2", "2.0-1"),
        ],
        upgraded: vec![change("pypi", "torch", "2.2.0", "2.3.1")],
        downgraded: vec![change("pypi", "numpy", "2.0.0", "1.26.4")],
        changed: vec![],
    });
    let mut v2 = version(
        "deeplearning-cuda",
        'b',
        "2026-04-01T10:00:00Z",
        5_100_000_000,
    );
    v2.scan = Some(scan(0, 2));
    v2.changes = Some(ChangesDoc {
        against: digest('9'),
        added: vec![],
        removed: vec![],
        upgraded: vec![change("deb", "openssl", "3.0.11", "3.0.13")],
        downgraded: vec![],
        changed: vec![],
    });
    let v3 = version(
        "deeplearning-cuda",
        '9',
        "2026-03-01T10:00:00Z",
        4_900_000_000,
    );
    dl.versions = vec![v1, v2, v3];

    let mut tf = image(&Spec {
        name: "tensorflow-cuda",
        display: "TensorFlow",
        description: "TensorFlow and Keras on GPUs.",
        gpu: &[1],
        cuda: Some("11.8.0"),
        frameworks: &["tensorflow"],
        groups: &["ml-course"],
        pip: &["tensorflow[and-cuda]==2.15"],
        apt: &[],
    });
    tf.rollback = Some(RollbackDoc {
        from_digest: Some(digest('d')),
        actor: "maintainer-anna".into(),
        reason: "the new build breaks Keras 3 notebooks".into(),
        at: "2026-05-03T08:00:00Z".into(),
    });
    tf.versions.push(version(
        "tensorflow-cuda",
        'e',
        "2026-02-01T10:00:00Z",
        4_000_000_000,
    ));

    let mut ds = image(&Spec {
        name: "datascience",
        display: "Data science",
        description: "pandas, scikit-learn and plotting for statistics courses.",
        gpu: &[],
        cuda: None,
        frameworks: &["scikit-learn"],
        groups: &["ml-course", "stats-101"],
        pip: &["pandas", "scikit-learn", "seaborn"],
        apt: &["graphviz"],
    });
    ds.request_change_url = None;
    ds.versions[0].size_bytes = Some(1_260_000_000);
    ds.packages = Some(vec![
        pkg("pypi", "pandas", "2.2.2"),
        pkg("pypi", "seaborn", "0.13.2"),
    ]);

    let mut nlp = image(&Spec {
        name: "nlp",
        display: "Text & \"NLP\" <b>bold</b>",
        description: HOSTILE,
        gpu: &[],
        cuda: None,
        frameworks: &["spacy", "transformers"],
        groups: &["stats-101"],
        pip: &["spacy", "OpenCV-Python-Headless"],
        apt: &[],
    });
    nlp.issue = Some(7);
    nlp.issue_url = Some("javascript:alert(1)".into());
    nlp.owners = vec![HOSTILE.into()];
    nlp.launch_url = "/hub/spawn?profile=nlp".into();

    let jax = image(&Spec {
        name: "jax-cuda",
        display: "JAX",
        description: "JAX and Flax for research code.",
        gpu: &[1, 2],
        cuda: Some("12.2.2"),
        frameworks: &["jax"],
        groups: &[],
        pip: &["jax[cuda12]", "flax"],
        apt: &[],
    });

    CatalogDoc {
        generation: 3,
        generated_at: "2026-05-04T12:00:00Z".into(),
        images: vec![dl, tf, ds, nlp, jax],
        unavailable: vec![Unavailable {
            name: "r-studio".into(),
            reason: "no published digest yet".into(),
        }],
    }
}

fn site() -> Site {
    Site {
        title: "KI-Cluster environments".into(),
        source: Some("https://github.com/example/labforge-catalog".into()),
    }
}

fn filters(q: &str, gpu: &str, cuda: &str, framework: &str, course: &str) -> Filters {
    let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
    Filters {
        q: opt(q),
        gpu: opt(gpu),
        cuda: opt(cuda),
        framework: opt(framework),
        course: opt(course),
    }
}

fn index(f: &Filters) -> String {
    Web::new()
        .expect("templates load")
        .index(&sample(), f, &site())
        .expect("index renders")
}

fn image_page(name: &str) -> String {
    let catalog = sample();
    let image = catalog
        .images
        .iter()
        .find(|i| i.name == name)
        .expect("sample image");
    Web::new()
        .expect("templates load")
        .image(image, &site())
        .expect("image page renders")
}

/// The values of `attr` on every `<tag …>` in `html`.
fn attrs(html: &str, tag: &str, attr: &str) -> Vec<Option<String>> {
    let open = format!("<{tag}");
    let mut out = vec![];
    let mut rest = html;
    while let Some(at) = rest.find(&open) {
        let after = &rest[at + open.len()..];
        rest = after;
        if !after.starts_with([' ', '>', '\n']) {
            continue;
        }
        let end = after.find('>').expect("tag closes");
        let tag_text = &after[..end];
        let key = format!(" {attr}=\"");
        out.push(tag_text.find(&key).map(|k| {
            let v = &tag_text[k + key.len()..];
            v[..v.find('"').expect("attribute closes")].to_string()
        }));
    }
    out
}

/// The `data-name` of every result card, in order.
fn card_names(html: &str) -> Vec<String> {
    html.split("<li class=\"card\"")
        .skip(1)
        .map(|part| {
            let v = &part[part.find("data-name=\"").expect("card has data-name") + 11..];
            v[..v.find('"').expect("attribute closes")].to_string()
        })
        .collect()
}

/// Heading levels in document order.
fn heading_levels(html: &str) -> Vec<u8> {
    let bytes = html.as_bytes();
    (0..bytes.len().saturating_sub(3))
        .filter(|&i| {
            bytes[i] == b'<'
                && bytes[i + 1] == b'h'
                && (b'1'..=b'6').contains(&bytes[i + 2])
                && matches!(bytes[i + 3], b' ' | b'>')
        })
        .map(|i| bytes[i + 2] - b'0')
        .collect()
}

fn assert_page_basics(html: &str) {
    assert!(html.starts_with("<!DOCTYPE html>"), "doctype first");
    assert!(html.contains("<html lang=\"en\">"), "lang=en");
    assert!(
        html.contains("name=\"viewport\""),
        "viewport meta for phones"
    );
    for landmark in ["<header", "<nav", "<main id=\"main\"", "<footer"] {
        assert!(html.contains(landmark), "landmark {landmark} missing");
    }
    assert!(
        html.contains("<a class=\"skip-link\" href=\"#main\">"),
        "skip link to main"
    );
    assert!(
        html.contains("href=\"/static/style.css\""),
        "stylesheet linked"
    );
    assert!(
        !html.contains("<script"),
        "no script element (and nothing unescaped)"
    );
    let levels = heading_levels(html);
    assert_eq!(
        levels.first(),
        Some(&1),
        "the first heading is h1: {levels:?}"
    );
    assert_eq!(
        levels.iter().filter(|&&l| l == 1).count(),
        1,
        "one h1: {levels:?}"
    );
    for pair in levels.windows(2) {
        assert!(pair[1] <= pair[0] + 1, "heading level skipped: {levels:?}");
    }
    // Every form control has an id and a <label for> naming it.
    for tag in ["input", "select", "textarea"] {
        for id in attrs(html, tag, "id") {
            let id = id.unwrap_or_else(|| panic!("a <{tag}> without id cannot be labelled"));
            assert!(
                html.contains(&format!("<label for=\"{id}\">")),
                "<{tag} id={id}> has no <label for>"
            );
        }
    }
    // Every table header cell has a scope.
    for scope in attrs(html, "th", "scope") {
        assert!(
            matches!(scope.as_deref(), Some("col" | "row")),
            "th without scope: {scope:?}"
        );
    }
    // Every link has an href that is not a script.
    for href in attrs(html, "a", "href") {
        let href = href.expect("every <a> has an href");
        assert!(!href.to_lowercase().starts_with("javascript:"), "{href}");
    }
}

#[test]
fn filter_table() {
    let catalog = sample();
    let cases: &[(Filters, &[&str])] = &[
        (
            Filters::default(),
            &[
                "deeplearning-cuda",
                "tensorflow-cuda",
                "datascience",
                "nlp",
                "jax-cuda",
            ],
        ),
        (
            filters("", "", "", "", ""),
            &[
                "deeplearning-cuda",
                "tensorflow-cuda",
                "datascience",
                "nlp",
                "jax-cuda",
            ],
        ),
        (
            filters("  ", "", "", "", ""),
            &[
                "deeplearning-cuda",
                "tensorflow-cuda",
                "datascience",
                "nlp",
                "jax-cuda",
            ],
        ),
        (
            filters("", "gpu", "", "", ""),
            &["deeplearning-cuda", "tensorflow-cuda", "jax-cuda"],
        ),
        (
            filters("", "GPU", "", "", ""),
            &["deeplearning-cuda", "tensorflow-cuda", "jax-cuda"],
        ),
        (filters("", "cpu", "", "", ""), &["datascience", "nlp"]),
        (
            filters("", "tpu", "", "", ""),
            &[
                "deeplearning-cuda",
                "tensorflow-cuda",
                "datascience",
                "nlp",
                "jax-cuda",
            ],
        ),
        (
            filters("", "", "12", "", ""),
            &["deeplearning-cuda", "jax-cuda"],
        ),
        (filters("", "", "12.4", "", ""), &["deeplearning-cuda"]),
        (filters("", "", "12.4.1", "", ""), &["deeplearning-cuda"]),
        (filters("", "", "11", "", ""), &["tensorflow-cuda"]),
        (filters("", "", "1", "", ""), &[]),
        (
            filters("", "", "", "transformers", ""),
            &["deeplearning-cuda", "nlp"],
        ),
        (filters("", "", "", "transformer", ""), &[]),
        (
            filters("", "", "", "", "stats-101"),
            &["datascience", "nlp"],
        ),
        (
            filters("", "", "", "", "ml-course"),
            &["tensorflow-cuda", "datascience"],
        ),
        (filters("", "", "", "", "ml"), &[]),
        // q: name, display name, description, frameworks, declared packages.
        (
            filters("CUDA", "", "", "", ""),
            &["deeplearning-cuda", "tensorflow-cuda", "jax-cuda"],
        ),
        (filters("pytorch", "", "", "", ""), &["deeplearning-cuda"]),
        (filters("keras", "", "", "", ""), &["tensorflow-cuda"]),
        (filters("spacy", "", "", "", ""), &["nlp"]),
        (filters("opencv", "", "", "", ""), &["nlp"]),
        (filters("graphviz", "", "", "", ""), &["datascience"]),
        (filters("ffmpeg", "", "", "", ""), &["deeplearning-cuda"]),
        (filters("flax", "", "", "", ""), &["jax-cuda"]),
        (
            filters("ms-python", "", "", "", ""),
            &[
                "deeplearning-cuda",
                "tensorflow-cuda",
                "datascience",
                "nlp",
                "jax-cuda",
            ],
        ),
        (filters("<script>", "", "", "", ""), &["nlp"]),
        (filters("nothing-matches", "", "", "", ""), &[]),
        // Combined filters narrow together.
        (
            filters("", "gpu", "", "", "ml-course"),
            &["tensorflow-cuda"],
        ),
        (filters("", "cpu", "", "transformers", ""), &["nlp"]),
        (filters("", "cpu", "12", "", ""), &[]),
        (
            filters("learning", "gpu", "12", "pytorch", ""),
            &["deeplearning-cuda"],
        ),
    ];
    for (f, want) in cases {
        let got: Vec<&str> = web::filter(&catalog.images, f)
            .iter()
            .map(|i| i.name.as_str())
            .collect();
        assert_eq!(&got, want, "filters {f:?}");
    }
}

#[test]
fn filter_options_come_from_the_catalog() {
    let options = web::FilterOptions::from_images(&sample().images);
    assert_eq!(options.cuda, ["11.8.0", "12.2.2", "12.4.1"]);
    assert_eq!(
        options.frameworks,
        [
            "jax",
            "pytorch",
            "scikit-learn",
            "spacy",
            "tensorflow",
            "transformers"
        ]
    );
    assert_eq!(options.courses, ["ml-course", "stats-101"]);
}

#[test]
fn index_lists_every_image_with_cards() {
    let html = index(&Filters::default());
    assert_page_basics(&html);
    assert_eq!(
        card_names(&html),
        [
            "deeplearning-cuda",
            "tensorflow-cuda",
            "datascience",
            "nlp",
            "jax-cuda"
        ]
    );
    assert!(html.contains(">5 of 5 environments</h2>"));
    assert!(html.contains("<title>Choose an environment · KI-Cluster environments</title>"));
    assert!(html.contains("href=\"/images/deeplearning-cuda\">Deep learning (PyTorch)</a>"));
    assert!(html.contains("data-name=\"datascience\" data-gpu=\"false\""));
    assert!(html.contains("data-name=\"deeplearning-cuda\" data-gpu=\"true\""));
    assert!(html.contains(">1, 2 or 4 GPUs</li>"));
    assert!(html.contains(">CUDA 12.4.1 + cuDNN 9.1.0</li>"));
    assert!(html.contains(">CPU only</li>"));
    assert!(html.contains(">Course: stats-101</li>"));
    assert!(html.contains("<dd>5.3 GB</dd>"));
    assert!(html.contains("<dd>1.3 GB</dd>"), "datascience is 1.26 GB");
    assert!(html.contains("<time datetime=\"2026-05-01T10:00:00Z\">2026-05-01</time>"));
    assert!(html.contains("<dd>0 critical · 0 high</dd>"));
    assert!(
        html.contains("Held at an earlier version."),
        "tensorflow's rollback shows"
    );
    // The catalog's unavailable images are named with their reason.
    assert!(html.contains("<strong>r-studio</strong>: no published digest yet"));
    // No filter active: no clear link.
    assert!(!html.contains("Clear filters"));
}

#[test]
fn index_launch_links_name_their_environment() {
    let catalog = sample();
    let html = index(&Filters::default());
    for image in &catalog.images {
        let display = web::escape_html(&image.display_name);
        let link = format!(
            "href=\"{}\">Launch<span class=\"visually-hidden\"> {display}</span></a>",
            image.launch_url
        );
        assert!(
            html.contains(&link),
            "launch link for {}: {link}",
            image.name
        );
    }
}

#[test]
fn index_form_has_labelled_controls_and_preselects_filters() {
    let html = index(&filters("torch", "gpu", "12.4.1", "pytorch", "ml-course"));
    assert_page_basics(&html);
    assert!(html.contains("<form class=\"filters\" method=\"get\" action=\"/\""));
    for (id, name) in [
        ("filter-q", "q"),
        ("filter-gpu", "gpu"),
        ("filter-cuda", "cuda"),
        ("filter-framework", "framework"),
        ("filter-course", "course"),
    ] {
        assert!(
            html.contains(&format!("<label for=\"{id}\">")),
            "{id} label"
        );
        assert!(
            html.contains(&format!("id=\"{id}\" name=\"{name}\"")),
            "{id} control"
        );
    }
    assert!(html.contains("name=\"q\" value=\"torch\""));
    assert!(html.contains("<option value=\"gpu\" selected>GPU</option>"));
    assert!(!html.contains("<option value=\"cpu\" selected>"));
    assert!(html.contains("<option value=\"12.4.1\" selected>CUDA 12.4.1</option>"));
    assert!(html.contains("<option value=\"11.8.0\">CUDA 11.8.0</option>"));
    assert!(html.contains("<option value=\"pytorch\" selected>pytorch</option>"));
    assert!(html.contains("<option value=\"ml-course\" selected>ml-course</option>"));
    assert!(html.contains("<button type=\"submit\">"));
    assert!(html.contains("<a class=\"clear-link\" href=\"/\">Clear filters</a>"));
    // torch + gpu + 12.4.1 + pytorch + ml-course: deeplearning-cuda is for everyone, not ml-course.
    assert_eq!(card_names(&html), Vec::<String>::new());
    assert!(html.contains(">0 of 5 environments</h2>"));
}

#[test]
fn index_shows_filtered_count_and_only_matching_cards() {
    let html = index(&filters("", "cpu", "", "", ""));
    assert_eq!(card_names(&html), ["datascience", "nlp"]);
    assert!(html.contains(">2 of 5 environments</h2>"));
    assert!(!html.contains("data-gpu=\"true\""));
    assert!(html.contains("<option value=\"cpu\" selected>CPU only</option>"));
}

#[test]
fn index_keeps_an_unknown_filter_value_selectable() {
    let html = index(&filters("", "", "12", "", ""));
    assert!(html.contains("<option value=\"12\" selected>CUDA 12</option>"));
    assert_eq!(card_names(&html), ["deeplearning-cuda", "jax-cuda"]);
}

#[test]
fn index_empty_result_offers_to_clear() {
    let html = index(&filters("nothing-matches", "", "", "", ""));
    assert_page_basics(&html);
    assert!(card_names(&html).is_empty());
    assert!(html.contains("No environment matches these filters."));
    assert!(html.contains("<a href=\"/\">Clear the filters and show all 5 environments</a>"));
    assert!(html.contains(">0 of 5 environments</h2>"));
}

#[test]
fn index_escapes_catalog_and_query_strings() {
    let html = index(&filters("\"><script>alert(2)</script>", "", "", "", ""));
    assert!(!html.contains("<script>"), "raw script tag in the page");
    assert!(
        html.contains("value=\"&quot;&gt;&lt;script&gt;alert(2)&lt;&#x2F;script&gt;\"")
            || html.contains("value=\"&quot;&gt;&lt;script&gt;alert(2)&lt;/script&gt;\"")
    );
    let all = index(&Filters::default());
    assert!(!all.contains(HOSTILE));
    assert!(all.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(!all.contains("<b>bold</b>"));
    assert!(all.contains("Text &amp; &quot;NLP&quot; &lt;b&gt;bold&lt;/b&gt;"));
}

#[test]
fn index_with_empty_catalog_says_nothing_is_published() {
    let catalog = CatalogDoc {
        generation: 1,
        generated_at: "2026-05-04T12:00:00Z".into(),
        images: vec![],
        unavailable: vec![],
    };
    let html = Web::new()
        .expect("sample renders")
        .index(&catalog, &Filters::default(), &Site::default())
        .expect("sample renders");
    assert_page_basics(&html);
    assert!(html.contains(">0 of 0 environments</h2>"));
    assert!(html.contains("No environment is published yet."));
    assert!(
        html.contains("<a class=\"site-title\" href=\"/\">Environments</a>"),
        "default title"
    );
    assert!(!html.contains("Catalog repository"), "no source, no link");
}

#[test]
fn image_page_facts_launch_and_moodle() {
    let html = image_page("deeplearning-cuda");
    assert_page_basics(&html);
    assert!(html.contains("<nav class=\"breadcrumb\" aria-label=\"Breadcrumb\">"));
    assert!(html.contains("<li><a href=\"/\">All environments</a></li>"));
    assert!(html.contains("<h1 id=\"image-heading\">Deep learning (PyTorch)</h1>"));
    assert!(html.contains(
        "href=\"https://hub.example.edu/hub/spawn?profile=deeplearning-cuda\">Launch Deep learning (PyTorch)</a>"
    ));
    assert!(html.contains("<dd>1, 2 or 4 GPUs (default 1)</dd>"));
    assert!(html.contains("CUDA 12.4.1, cuDNN 9.1.0, needs NVIDIA driver 550.54 or newer"));
    assert!(html.contains("<dd>Ubuntu 22.04</dd>"));
    assert!(html.contains("<dd>up to 8, 2 guaranteed</dd>"));
    assert!(html.contains("<dd>up to 32G, 8.6 GB guaranteed</dd>"));
    assert!(html.contains("<dd>everyone</dd>"), "no groups: everyone");
    assert!(html.contains("<dd>ml-team</dd>"));
    assert!(html.contains(
        "<a href=\"https://github.com/example/labforge-catalog/issues/42\">request issue #42</a>"
    ));
    let current = &sample().images[0].versions[0];
    assert!(html.contains(&format!(
        "<code class=\"digest\" id=\"current-digest\">{}</code>",
        current.digest
    )));
    assert!(html.contains(&format!(
        "<code class=\"reference\" id=\"current-reference\">{}</code>",
        current.reference
    )));
    assert!(
        html.contains("<dd><time datetime=\"2026-05-01T09:00:00Z\">2026-05-01</time></dd>"),
        "last build"
    );
    assert!(html.contains("<span class=\"verdict verdict-pass\">pass</span> 0 critical · 0 high · 3 medium · 7 low (1 waived)"));
    // Moodle: a labelled readonly field with the launch URL.
    assert!(
        html.contains("<label for=\"moodle-url\">Launch link for Deep learning (PyTorch)</label>")
    );
    assert!(html.contains(
        "id=\"moodle-url\" class=\"copy-field\" readonly value=\"https://hub.example.edu/hub/spawn?profile=deeplearning-cuda\""
    ));
    assert!(html.contains("id=\"request-change\" href=\"https://github.com/example/labforge-catalog/issues/new?template=change.yml&amp;image=deeplearning-cuda\""));
    assert!(!html.contains("rollback-notice"));
}

#[test]
fn image_page_without_request_url_has_no_request_link() {
    let html = image_page("datascience");
    assert_page_basics(&html);
    assert!(!html.contains("request-change"));
    assert!(!html.contains("Request a change"));
    assert!(html.contains("<dd>CPU only</dd>"));
    assert!(html.contains("<dd>ml-course, stats-101</dd>"));
    assert!(
        !html.contains("<dt>CUDA</dt>"),
        "CPU image has no CUDA facts"
    );
}

#[test]
fn image_page_shows_rollback_notice() {
    let html = image_page("tensorflow-cuda");
    assert_page_basics(&html);
    assert!(html.contains("id=\"rollback-notice\""));
    assert!(html.contains("maintainer-anna rolled this environment back on <time datetime=\"2026-05-03T08:00:00Z\">2026-05-03</time>"));
    assert!(html.contains(&format!(
        "from <code title=\"{}\">sha256:dddddddddddd</code>",
        digest('d')
    )));
    assert!(html.contains(": the new build breaks Keras 3 notebooks"));
}

#[test]
fn image_page_groups_installed_packages_by_kind() {
    let html = image_page("deeplearning-cuda");
    assert!(
        html.contains("data-kind=\"deb\" data-count=\"180\">"),
        "deb group closed, 180 rows"
    );
    assert!(
        html.contains("data-kind=\"pypi\" data-count=\"61\">"),
        "pypi group closed, 61 rows"
    );
    assert!(
        html.contains("data-kind=\"conda\" data-count=\"1\" open>"),
        "small group open"
    );
    assert!(
        html.contains(
            "<summary>Debian packages (apt) <span class=\"count\">(180)</span></summary>"
        )
    );
    assert!(html.contains("242 packages in the current version"));
    let rows = html.matches("<tr><td>").count();
    assert_eq!(rows, 242, "one row per installed package");
    assert!(html.contains("<tr><td>pypi</td><th scope=\"row\">torch</th><td>2.3.1</td></tr>"));
    // Declared packages are listed as written.
    assert!(html.contains("<dt>Python packages (pip) (2)</dt>"));
    assert!(html.contains("<li><code>transformers&gt;=4.40</code></li>"));
    assert!(html.contains("<dt>VS Code extensions (1)</dt>"));
    // No SBOM on record says so.
    let jax = image_page("jax-cuda");
    assert!(jax.contains("No package list (software bill of materials) is on record"));
    assert!(!jax.contains("class=\"packages\""));
}

#[test]
fn image_page_versions_and_changes() {
    let html = image_page("deeplearning-cuda");
    let table = &html[html.find("id=\"versions\"").expect("versions table")..];
    let table = &table[..table.find("</table>").expect("table closes")];
    assert_eq!(table.matches("<tr").count(), 4, "header + 3 versions");
    assert_eq!(
        table
            .matches("class=\"badge badge-current\">current</span>")
            .count(),
        1
    );
    assert!(table.contains(&format!(
        "<code title=\"{}\">sha256:cccccccccccc</code>",
        digest('c')
    )));
    assert!(table.contains("<td>5.1 GB</td>"));
    assert!(table.contains("<td>0 critical · 2 high</td>"));
    assert_eq!(
        html.matches("<details class=\"changes\"").count(),
        2,
        "two versions have changes"
    );
    assert!(html.contains(
        "Changes since <code title=\"sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\">sha256:bbbbbbbbbbbb</code>"
    ));
    assert!(html.contains("(current): 1 added · 2 removed · 1 upgraded · 1 downgraded</summary>"));
    assert!(html.contains(": 0 added · 0 removed · 1 upgraded · 0 downgraded</summary>"));
    assert!(
        html.contains("<li><code>torch</code> 2.2.0 → 2.3.1 <span class=\"kind\">pypi</span></li>")
    );
    assert!(
        html.contains(
            "<li><code>numpy</code> 2.0.0 → 1.26.4 <span class=\"kind\">pypi</span></li>"
        )
    );
    assert!(html.contains("<h4>Removed (2)</h4>"));
    // No changes on record: no changes section.
    let ds = image_page("datascience");
    assert!(!ds.contains("Package changes"));
}

#[test]
fn image_page_escapes_and_drops_unsafe_urls() {
    let html = image_page("nlp");
    assert_page_basics(&html);
    assert!(!html.contains(HOSTILE));
    assert!(html.contains("<p class=\"lead\">&lt;script&gt;alert(1)&lt;/script&gt;</p>"));
    assert!(
        html.contains("<a href=\"#\">request issue #7</a>"),
        "javascript: issue URL dropped"
    );
    assert!(
        html.contains("<dd>&lt;script&gt;alert(1)&lt;/script&gt;</dd>"),
        "owners escaped"
    );
    assert!(html.contains("<title>Text &amp; &quot;NLP&quot; &lt;b&gt;bold&lt;/b&gt; · KI-Cluster environments</title>"));
    // A relative launch URL gets a hint to put the hub's address in front.
    assert!(html.contains("readonly value=\"/hub/spawn?profile=nlp\""));
    assert!(html.contains("put the hub’s address"));
}

#[test]
fn error_pages() {
    let web = Web::new().expect("templates load");
    let not_found = web
        .error(404, "no environment is called \"<x>\"", &site())
        .expect("sample renders");
    assert_page_basics(&not_found);
    assert!(not_found.contains("<p class=\"status-code\">Error 404</p>"));
    assert!(not_found.contains("<h1 id=\"error-heading\">Page not found</h1>"));
    assert!(not_found.contains("no environment is called &quot;&lt;x&gt;&quot;"));
    assert!(not_found.contains("<a class=\"button\" href=\"/\">Back to all environments</a>"));
    let unavailable = web
        .error(
            503,
            "the catalog is not loaded yet: state store unreachable",
            &site(),
        )
        .expect("sample renders");
    assert_page_basics(&unavailable);
    assert!(unavailable.contains("Error 503"));
    assert!(unavailable.contains("The catalog is not available yet"));
    assert!(unavailable.contains("the catalog is not loaded yet: state store unreachable"));
}

#[test]
fn stylesheet_is_compiled_in_and_responsive() {
    assert!(web::STYLE_CSS.contains(":focus-visible"));
    assert!(web::STYLE_CSS.contains("prefers-color-scheme: dark"));
    assert!(web::STYLE_CSS.contains(".visually-hidden"));
    assert!(!web::STYLE_CSS.contains("@import"), "no external assets");
    assert!(!web::STYLE_CSS.contains("url("), "no external assets");
}

#[test]
fn index_snapshot() {
    insta::assert_snapshot!("index_sample", index(&Filters::default()));
}

/// Serves the sample catalog for the browser test while the real server is
/// being built. Not run by default.
#[tokio::test]
#[ignore = "development server: blocks until killed"]
async fn serve_sample_for_browser() {
    use axum::Router;
    use axum::extract::{Path, Query};
    use axum::http::{StatusCode, header};
    use axum::response::{Html, IntoResponse};
    use axum::routing::get;

    let addr = std::env::var("LABFORGE_WEB_DEV_ADDR").unwrap_or_else(|_| "127.0.0.1:8765".into());
    let app = Router::new()
        .route(
            "/",
            get(|Query(f): Query<Filters>| async move {
                Html(
                    Web::new()
                        .expect("templates load")
                        .index(&sample(), &f, &site())
                        .expect("sample renders"),
                )
            }),
        )
        .route(
            "/images/{name}",
            get(|Path(name): Path<String>| async move {
                let web = Web::new().expect("templates load");
                match sample().images.iter().find(|i| i.name == name) {
                    Some(image) => {
                        Html(web.image(image, &site()).expect("sample renders")).into_response()
                    }
                    None => (
                        StatusCode::NOT_FOUND,
                        Html(
                            web.error(404, &format!("no environment is called {name}"), &site())
                                .expect("sample renders"),
                        ),
                    )
                        .into_response(),
                }
            }),
        )
        .route(
            "/static/style.css",
            get(|| async { ([(header::CONTENT_TYPE, "text/css")], web::STYLE_CSS) }),
        );
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .expect("bind LABFORGE_WEB_DEV_ADDR");
    println!("serving the sample catalog on http://{addr}");
    axum::serve(listener, app).await.expect("serve");
}
