//! Content identity and plan reasons, on a small in-memory project: which
//! images a change touches, and what the plan says about them.

use std::collections::BTreeMap;

use labforge_core::catalog::{SourceFile, Sources};
use labforge_core::identity::Inputs;
use labforge_core::plan::{self, Action, Plan, Presence};
use labforge_core::render::{BaseMap, BuildEnv, TemplateSet};
use labforge_core::{Analyzed, analyze};

const SETTINGS: &str = "\
registry: {host: 127.0.0.1:5000, prefix: test}
bases:
  os:
    image: debian:bookworm
";

fn files() -> BTreeMap<&'static str, String> {
    BTreeMap::from([
        (
            "root",
            "name: root\ntemplate: a.Dockerfile.tera\nbase: os\n".to_string(),
        ),
        (
            "child",
            "name: child\ntemplate: b.Dockerfile.tera\nparent: root\n".to_string(),
        ),
        (
            "grandchild",
            "name: grandchild\ntemplate: b.Dockerfile.tera\nparent: child\n".to_string(),
        ),
        (
            "other",
            "name: other\ntemplate: b.Dockerfile.tera\nbase: os\n".to_string(),
        ),
    ])
}

fn templates() -> BTreeMap<&'static str, String> {
    BTreeMap::from([
        ("partials/from.tera", "{% if parent.kind == \"base\" %}ARG BASE_IMAGE={{ parent.reference }}{% else %}# parent {{ parent.identity }}\nARG BASE_IMAGE{% endif %}\nFROM ${BASE_IMAGE}\n".to_string()),
        ("partials/x.tera", "RUN echo x\n".to_string()),
        ("partials/packages.tera", "{% if files.pip %}COPY {{ files.pip }} /tmp/r.txt\nRUN pip install --no-cache-dir -r /tmp/r.txt\n{% endif %}".to_string()),
        ("a.Dockerfile.tera", "{% include \"partials/from.tera\" %}{% include \"partials/x.tera\" %}{% include \"partials/packages.tera\" %}".to_string()),
        ("b.Dockerfile.tera", "{% include \"partials/from.tera\" %}{% include \"partials/packages.tera\" %}ENV IMAGE={{ image.name | dq }}\n".to_string()),
    ])
}

fn try_run(
    settings: &str,
    images: &BTreeMap<&str, String>,
    tpl: &BTreeMap<&str, String>,
    map: &BaseMap,
) -> Result<Analyzed, Vec<labforge_core::Problem>> {
    let sources = Sources {
        settings: SourceFile {
            path: "catalog.yaml".into(),
            text: settings.into(),
        },
        images: images
            .iter()
            .map(|(n, t)| SourceFile {
                path: format!("images/{n}.yaml"),
                text: t.clone(),
            })
            .collect(),
    };
    let set = TemplateSet {
        templates: tpl
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
        files: BTreeMap::new(),
    };
    analyze(&sources, set, &BuildEnv::from(map.clone()))
}

fn run(images: &BTreeMap<&str, String>, tpl: &BTreeMap<&str, String>, map: &BaseMap) -> Analyzed {
    match try_run(SETTINGS, images, tpl, map) {
        Ok(a) => a,
        Err(problems) => panic!("{problems:?}"),
    }
}

fn identities(a: &Analyzed) -> BTreeMap<String, String> {
    a.catalog
        .images
        .iter()
        .zip(&a.prepared)
        .map(|(i, p)| (i.name.clone(), p.inputs.identity.clone()))
        .collect()
}

fn baseline(a: &Analyzed) -> BTreeMap<String, Inputs> {
    a.catalog
        .images
        .iter()
        .zip(&a.prepared)
        .map(|(i, p)| (i.name.clone(), p.inputs.clone()))
        .collect()
}

fn make_plan(a: &Analyzed, presence: Presence, baseline: &BTreeMap<String, Inputs>) -> Plan {
    let presence = vec![presence; a.catalog.images.len()];
    plan::plan(
        &a.catalog,
        &a.graph,
        &a.prepared,
        &presence,
        baseline,
        a.catalog.settings.registry.as_ref(),
    )
}

fn changed(before: &Analyzed, after: &Analyzed) -> Vec<String> {
    let (b, a) = (identities(before), identities(after));
    a.iter()
        .filter(|(k, v)| b.get(*k) != Some(v))
        .map(|(k, _)| k.clone())
        .collect()
}

fn reasons<'p>(p: &'p Plan, name: &str) -> &'p [String] {
    &p.images
        .iter()
        .find(|i| i.name == name)
        .expect("planned")
        .reasons
}

#[test]
fn levels_put_parents_first() {
    let a = run(&files(), &templates(), &BaseMap::default());
    let p = make_plan(&a, Presence::NotChecked, &BTreeMap::new());
    assert_eq!(
        p.levels,
        vec![vec!["other", "root"], vec!["child"], vec!["grandchild"]]
    );
    assert!(p.images.iter().all(|i| i.action == Action::Build));
    assert_eq!(
        reasons(&p, "root"),
        ["new: no earlier build of this image is known"]
    );
    let root = p.images.iter().find(|i| i.name == "root").expect("root");
    assert_eq!(root.tag, format!("main-{}", &root.identity[..12]));
    assert_eq!(
        root.reference.as_deref(),
        Some(format!("127.0.0.1:5000/test/root:{}", root.tag).as_str())
    );
}

#[test]
fn rendering_is_deterministic() {
    let a = run(&files(), &templates(), &BaseMap::default());
    let b = run(&files(), &templates(), &BaseMap::default());
    assert_eq!(identities(&a), identities(&b));
    for (x, y) in a.prepared.iter().zip(&b.prepared) {
        assert_eq!(x.rendered, y.rendered);
    }
}

#[test]
fn partial_change_touches_its_users_and_their_descendants() {
    let before = run(&files(), &templates(), &BaseMap::default());
    let mut tpl = templates();
    tpl.insert("partials/x.tera", "RUN echo y\n".to_string());
    let after = run(&files(), &tpl, &BaseMap::default());
    assert_eq!(changed(&before, &after), ["child", "grandchild", "root"]);
    let p = make_plan(&after, Presence::Absent, &baseline(&before));
    assert_eq!(reasons(&p, "root"), ["template partials/x.tera changed"]);
    assert_eq!(reasons(&p, "child"), ["parent root changed"]);
    assert_eq!(reasons(&p, "grandchild"), ["parent child changed"]);
    assert_eq!(
        reasons(&p, "other"),
        ["inputs unchanged, but the image is missing from the registry"]
    );
}

#[test]
fn shared_partial_change_touches_everyone() {
    let before = run(&files(), &templates(), &BaseMap::default());
    let mut tpl = templates();
    tpl.insert(
        "partials/from.tera",
        format!("# v2\n{}", templates()["partials/from.tera"]),
    );
    let after = run(&files(), &tpl, &BaseMap::default());
    assert_eq!(changed(&before, &after).len(), 4);
    let p = make_plan(&after, Presence::Absent, &baseline(&before));
    assert_eq!(
        reasons(&p, "other"),
        ["template partials/from.tera changed"]
    );
    // A child changed twice over: through its parent and its own template.
    assert_eq!(
        reasons(&p, "child"),
        ["parent root changed", "template partials/from.tera changed"]
    );
}

#[test]
fn package_added_is_named() {
    let before = run(&files(), &templates(), &BaseMap::default());
    let mut images = files();
    images.insert(
        "other",
        "name: other\ntemplate: b.Dockerfile.tera\nbase: os\npackages:\n  pip: [pandas>=2.2]\n"
            .into(),
    );
    let after = run(&images, &templates(), &BaseMap::default());
    assert_eq!(changed(&before, &after), ["other"]);
    let p = make_plan(&after, Presence::Absent, &baseline(&before));
    assert_eq!(reasons(&p, "other"), ["pip package added: pandas>=2.2"]);
    // And upgraded, then removed.
    let mut upgraded = images.clone();
    upgraded.insert(
        "other",
        "name: other\ntemplate: b.Dockerfile.tera\nbase: os\npackages:\n  pip: [pandas>=2.3]\n"
            .into(),
    );
    let later = run(&upgraded, &templates(), &BaseMap::default());
    let p = make_plan(&later, Presence::Absent, &baseline(&after));
    assert_eq!(
        reasons(&p, "other"),
        ["pip package changed: pandas>=2.2 → pandas>=2.3"]
    );
    let p = make_plan(&before, Presence::Absent, &baseline(&after));
    assert_eq!(reasons(&p, "other"), ["pip package removed: pandas>=2.2"]);
}

#[test]
fn nothing_changed_means_nothing_to_build() {
    let before = run(&files(), &templates(), &BaseMap::default());
    let after = run(&files(), &templates(), &BaseMap::default());
    let p = make_plan(
        &after,
        Presence::Present("sha256:abc".into()),
        &baseline(&before),
    );
    assert!(p.images.iter().all(|i| i.action == Action::Skip));
    assert_eq!(p.summary.build, 0);
    assert!(reasons(&p, "root")[0].starts_with("up to date: main-"));
}

#[test]
fn reformatting_an_unrelated_file_changes_nothing() {
    let before = run(&files(), &templates(), &BaseMap::default());
    let mut images = files();
    images.insert(
        "child",
        "# The child image.\nparent: root   # built on root\n\ntemplate: \"b.Dockerfile.tera\"\nname:   child\n".into(),
    );
    let after = run(&images, &templates(), &BaseMap::default());
    assert!(changed(&before, &after).is_empty());
}

#[test]
fn catalog_field_change_is_explained() {
    let before = run(&files(), &templates(), &BaseMap::default());
    let mut tpl = templates();
    tpl.insert(
        "b.Dockerfile.tera",
        "{% include \"partials/from.tera\" %}{% include \"partials/packages.tera\" %}ENV IMAGE={{ image.name | dq }}\nENV REPO={{ image.repository | dq }}\n".into(),
    );
    let after = run(&files(), &tpl, &BaseMap::default());
    let p = make_plan(&after, Presence::Absent, &baseline(&before));
    assert_eq!(reasons(&p, "other"), ["template b.Dockerfile.tera changed"]);
    let mut images = files();
    images.insert(
        "other",
        "name: other\ntemplate: b.Dockerfile.tera\nbase: os\nbuild_args:\n  COURSE_YEAR: \"2026\"\n"
            .into(),
    );
    let after = run(&images, &templates(), &BaseMap::default());
    let p = make_plan(&after, Presence::Absent, &baseline(&before));
    assert_eq!(reasons(&p, "other"), ["build argument COURSE_YEAR added"]);
}

#[test]
fn base_map_changes_images_on_that_base() {
    let before = run(&files(), &templates(), &BaseMap::default());
    let map = BaseMap::parse(["debian:*=labforge-standin/debian:bookworm"]).expect("valid");
    let after = run(&files(), &templates(), &map);
    assert_eq!(changed(&before, &after).len(), 4);
    let other = after.catalog.position("other").expect("other");
    assert!(
        after.prepared[other]
            .rendered
            .dockerfile
            .contains("ARG BASE_IMAGE=labforge-standin/debian:bookworm")
    );
    let p = make_plan(&after, Presence::Absent, &baseline(&before));
    assert_eq!(
        reasons(&p, "other"),
        ["base changed: debian:bookworm → labforge-standin/debian:bookworm"]
    );
}

#[test]
fn registry_is_not_part_of_identity() {
    let a = run(&files(), &templates(), &BaseMap::default());
    let settings = SETTINGS
        .replace("127.0.0.1:5000", "registry.example.edu")
        .replace("prefix: test", "prefix: other");
    let b = match try_run(&settings, &files(), &templates(), &BaseMap::default()) {
        Ok(b) => b,
        Err(p) => panic!("{p:?}"),
    };
    assert_eq!(
        b.catalog
            .settings
            .registry
            .as_ref()
            .map(|r| r.host.as_str()),
        Some("registry.example.edu")
    );
    assert_eq!(identities(&a), identities(&b));
}

#[test]
fn catalog_entry_change_is_named() {
    let mut images = files();
    images.insert(
        "other",
        "name: other\ntemplate: b.Dockerfile.tera\nbase: os\nenv:\n  COURSE: nlp\n".into(),
    );
    let mut tpl = templates();
    tpl.insert(
        "b.Dockerfile.tera",
        "{% include 'partials/from.tera' %}{% include \"partials/packages.tera\" %}ENV IMAGE={{ image.name | dq }}\n{% for k, v in env %}ENV {{ k }}={{ v | dq }}\n{% endfor %}".into(),
    );
    let with_env_loop = run(&files(), &tpl, &BaseMap::default());
    let after = run(&images, &tpl, &BaseMap::default());
    let p = make_plan(&after, Presence::Absent, &baseline(&with_env_loop));
    assert_eq!(
        reasons(&p, "other"),
        ["catalog entry changed (env, labels, build args, variant or base settings)"]
    );
    // Single-quoted includes count too.
    let child = after.catalog.position("other").expect("other");
    assert!(
        after.prepared[child]
            .rendered
            .templates
            .contains("partials/from.tera")
    );
}

#[test]
fn package_order_does_not_matter() {
    let mut a = files();
    a.insert(
        "other",
        "name: other\ntemplate: b.Dockerfile.tera\nbase: os\npackages:\n  pip: [numpy, pandas]\n"
            .into(),
    );
    let mut b = files();
    b.insert(
        "other",
        "name: other\ntemplate: b.Dockerfile.tera\nbase: os\npackages:\n  pip: [pandas, numpy]\n"
            .into(),
    );
    let (a, b) = (
        run(&a, &templates(), &BaseMap::default()),
        run(&b, &templates(), &BaseMap::default()),
    );
    assert_eq!(identities(&a), identities(&b));
}

#[test]
fn a_template_that_drops_a_package_list_is_an_error() {
    let mut images = files();
    images.insert(
        "root",
        "name: root\ntemplate: a.Dockerfile.tera\nbase: os\npackages:\n  apt: [curl]\n".into(),
    );
    let problems = try_run(SETTINGS, &images, &templates(), &BaseMap::default())
        .err()
        .expect("an error");
    let text = problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        text.contains("root: the Dockerfile never copies apt-packages.txt"),
        "{text}"
    );
}

#[test]
fn parallel_rendering_matches_sequential() {
    // 40 siblings on the base render in parallel (a level of 40); each alone
    // renders sequentially. Identities must agree.
    let mut many = BTreeMap::new();
    let names: Vec<String> = (0..40).map(|i| format!("img{i:02}")).collect();
    for n in &names {
        many.insert(
            n.as_str(),
            format!(
                "name: {n}\ntemplate: b.Dockerfile.tera\nbase: os\npackages:\n  pip: [pkg{n}]\n"
            ),
        );
    }
    let all = run(&many, &templates(), &BaseMap::default());
    for n in names.iter().step_by(7) {
        let one = run(
            &BTreeMap::from([(n.as_str(), many[n.as_str()].clone())]),
            &templates(),
            &BaseMap::default(),
        );
        assert_eq!(identities(&one)[n], identities(&all)[n]);
    }
}
