//! Tests of the spawner module: the list built from the shipped catalog, the
//! contract check as a table of broken documents, and the Helm fragment.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use yaml_rust2::{Yaml, YamlLoader};

use super::*;
use crate::catalog::{self, Catalog, Image, SourceFile, Sources, load};

const IMAGE_FILES: &[&str] = &["compilers", "deeplearning", "grading", "nlp", "notebook"];

fn image_text(name: &str) -> &'static str {
    match name {
        "compilers" => include_str!("../../../catalog/images/compilers.yaml"),
        "deeplearning" => include_str!("../../../catalog/images/deeplearning.yaml"),
        "grading" => include_str!("../../../catalog/images/grading.yaml"),
        "nlp" => include_str!("../../../catalog/images/nlp.yaml"),
        "notebook" => include_str!("../../../catalog/images/notebook.yaml"),
        other => panic!("no image file {other}"),
    }
}

/// The shipped catalog.
fn shipped() -> Catalog {
    let files = IMAGE_FILES;
    let sources = Sources {
        settings: SourceFile {
            path: "catalog/catalog.yaml".into(),
            text: include_str!("../../../catalog/catalog.yaml").into(),
        },
        images: files
            .iter()
            .map(|name| SourceFile {
                path: format!("catalog/images/{name}.yaml"),
                text: image_text(name).into(),
            })
            .collect(),
    };
    match load(&sources) {
        Ok(c) => c,
        Err(d) => panic!("the shipped catalog must load: {d:?}"),
    }
}

fn hex_digest(seed: &str) -> String {
    let sum = Sha256::digest(seed.as_bytes());
    let hex: String = sum.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// `n` fake published versions of an image, newest first, a day apart,
/// the newest on 2026-11-20 12:00 UTC.
fn versions(image: &Image, n: usize) -> Vec<Version> {
    const NOV_20_2026_NOON_MS: i64 = 1_795_176_000_000;
    (0..n)
        .map(|i| {
            let digest = hex_digest(&format!("{}-{i}", image.name));
            Version {
                reference: format!(
                    "registry.ki.example.edu/labforge/{}@{digest}",
                    image.repository
                ),
                digest,
                published_at: NOV_20_2026_NOON_MS - i as i64 * 86_400_000,
            }
        })
        .collect()
}

/// `n` versions of each image.
fn published(images: &[Image], n: usize) -> Vec<Vec<Version>> {
    images.iter().map(|i| versions(i, n)).collect()
}

fn entries<'a>(c: &'a Catalog, images: &'a [Image], v: &'a [Vec<Version>]) -> Vec<Entry<'a>> {
    images
        .iter()
        .zip(v)
        .map(|(image, versions)| Entry {
            image,
            base: c.root_base(image),
            versions,
        })
        .collect()
}

fn shipped_list(settings: &SpawnerSettings) -> (Catalog, Vec<SpawnerProfile>) {
    let c = shipped();
    let v = published(&c.images, 4);
    let list = profile_list(&entries(&c, &c.images, &v), settings);
    (c, list)
}

/// The shipped catalog's images from the given image files, in order.
fn select(c: &Catalog, repositories: &[&str]) -> Vec<Image> {
    c.images
        .iter()
        .filter(|i| repositories.contains(&i.repository.as_str()))
        .cloned()
        .collect()
}

/// The profile list of the shipped images from the given image files.
fn list_of(repositories: &[&str], n: usize, settings: &SpawnerSettings) -> Vec<SpawnerProfile> {
    let c = shipped();
    let images = select(&c, repositories);
    let v = published(&images, n);
    profile_list(&entries(&c, &images, &v), settings)
}

fn json_of(list: &[SpawnerProfile]) -> Value {
    serde_json::to_value(list).expect("a profile list serializes")
}

fn by_slug<'a>(list: &'a [SpawnerProfile], slug: &str) -> &'a SpawnerProfile {
    list.iter()
        .find(|p| p.slug == slug)
        .unwrap_or_else(|| panic!("no profile {slug}"))
}

// ---------------------------------------------------------------- build

#[test]
fn escape_html_escapes_the_five_characters() {
    assert_eq!(
        escape_html(r#"a & b <c> "d" 'e'"#),
        "a &amp; b &lt;c&gt; &quot;d&quot; &#39;e&#39;"
    );
    assert_eq!(escape_html("Notebook · CPU"), "Notebook · CPU");
    assert_eq!(escape_html("&amp;"), "&amp;amp;");
}

#[test]
fn shipped_catalog_list_passes_the_check() {
    let (c, list) = shipped_list(&SpawnerSettings::default());
    assert_eq!(
        c.images.len(),
        14,
        "the shipped catalog has 14 concrete images"
    );
    assert_eq!(list.len(), 14);
    let violations = check(&json_of(&list));
    assert_eq!(violations, Vec::<Violation>::new());
    for (image, profile) in c.images.iter().zip(&list) {
        assert_eq!(profile.slug, image.profile.slug);
        assert_eq!(
            profile.kubespawner_override["extra_labels"],
            json!({"hub.labforge.io/image": image.name})
        );
        let current = versions(image, 1);
        assert_eq!(
            profile.kubespawner_override["image"],
            json!(current[0].reference)
        );
        let keys: Vec<&str> = profile.profile_options.keys().map(String::as_str).collect();
        let expected: &[&str] = if matches!(image.profile.gpus, Some(catalog::Gpus::Choices { .. }))
        {
            &["version", "gpus"]
        } else {
            &["version"]
        };
        assert_eq!(keys, expected, "{}", image.name);
    }
}

#[test]
fn override_keys_come_in_a_fixed_order() {
    let settings = SpawnerSettings {
        image_pull_policy: Some("IfNotPresent".into()),
        ..SpawnerSettings::default()
    };
    let (_, list) = shipped_list(&settings);
    let gpu = by_slug(&list, "deeplearning-cuda");
    let keys: Vec<&str> = gpu
        .kubespawner_override
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "image",
            "image_pull_policy",
            "cpu_limit",
            "cpu_guarantee",
            "mem_limit",
            "mem_guarantee",
            "extra_resource_limits",
            "node_selector",
            "tolerations",
            "extra_labels"
        ]
    );
    assert_eq!(
        gpu.kubespawner_override["image_pull_policy"],
        json!("IfNotPresent")
    );
    assert_eq!(gpu.kubespawner_override["cpu_limit"], json!(16.0));
    assert_eq!(gpu.kubespawner_override["mem_limit"], json!("64G"));
    let (_, plain) = shipped_list(&SpawnerSettings::default());
    let cpu = by_slug(&plain, "notebook-scipy-cpu");
    assert!(!cpu.kubespawner_override.contains_key("image_pull_policy"));
}

#[test]
fn gpu_profiles_limit_gpus_and_repeat_the_hub_tolerations_first() {
    let settings = SpawnerSettings::default();
    let (c, list) = shipped_list(&settings);
    let mut gpu_profiles = 0;
    for (image, profile) in c.images.iter().zip(&list) {
        let Some(gpus) = &image.profile.gpus else {
            continue;
        };
        gpu_profiles += 1;
        let o = &profile.kubespawner_override;
        let expected = match gpus {
            catalog::Gpus::Count(n) => n.to_string(),
            catalog::Gpus::Choices { default, .. } => default.to_string(),
        };
        assert_eq!(
            expected, "1",
            "{}: every shipped GPU image defaults to one GPU",
            image.name
        );
        assert_eq!(
            o["extra_resource_limits"],
            json!({"nvidia.com/gpu": "1"}),
            "{}",
            image.name
        );
        assert!(!o.contains_key("extra_resource_guarantees"));
        assert_eq!(
            o["node_selector"],
            json!({"nvidia.com/gpu.present": "true"})
        );
        let tolerations = o["tolerations"].as_array().expect("a list");
        assert_eq!(
            tolerations,
            &vec![
                json!({"key": "hub.jupyter.org/dedicated", "operator": "Equal", "value": "user", "effect": "NoSchedule"}),
                json!({"key": "hub.jupyter.org_dedicated", "operator": "Equal", "value": "user", "effect": "NoSchedule"}),
                json!({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}),
            ],
            "{}",
            image.name
        );
    }
    assert_eq!(gpu_profiles, 8);
}

#[test]
fn gpu_choices_become_an_option_with_the_catalog_default() {
    let settings = SpawnerSettings {
        gpu_resource: "example.com/gpu".into(),
        ..SpawnerSettings::default()
    };
    let (_, list) = shipped_list(&settings);
    let p = by_slug(&list, "deeplearning-cuda");
    assert_eq!(
        p.kubespawner_override["extra_resource_limits"],
        json!({"example.com/gpu": "1"})
    );
    let gpus = &p.profile_options["gpus"];
    assert_eq!(gpus.display_name, "GPUs");
    let keys: Vec<&str> = gpus.choices.keys().map(String::as_str).collect();
    assert_eq!(keys, ["1", "2", "4"]);
    let names: Vec<&str> = gpus
        .choices
        .values()
        .map(|c| c.display_name.as_str())
        .collect();
    assert_eq!(names, ["1 GPU", "2 GPUs", "4 GPUs"]);
    let defaults: Vec<bool> = gpus.choices.values().map(|c| c.default).collect();
    assert_eq!(defaults, [true, false, false]);
    assert_eq!(
        gpus.choices["4"].kubespawner_override["extra_resource_limits"],
        json!({"example.com/gpu": "4"})
    );
    assert_eq!(check(&json_of(&list)), Vec::<Violation>::new());
}

#[test]
fn cpu_profiles_have_no_gpu_limits_and_no_tolerations() {
    let (c, list) = shipped_list(&SpawnerSettings::default());
    let mut cpu_profiles = 0;
    for (image, profile) in c.images.iter().zip(&list) {
        if image.profile.gpus.is_some() {
            continue;
        }
        cpu_profiles += 1;
        let o = &profile.kubespawner_override;
        assert!(!o.contains_key("extra_resource_limits"), "{}", image.name);
        assert!(
            !o.contains_key("extra_resource_guarantees"),
            "{}",
            image.name
        );
        assert_eq!(
            o.contains_key("tolerations"),
            !image.profile.tolerations.is_empty(),
            "{}",
            image.name
        );
        assert!(!profile.profile_options.contains_key("gpus"));
        assert_eq!(o["cpu_guarantee"], json!(0.5));
    }
    assert_eq!(cpu_profiles, 6);
}

#[test]
fn catalog_tolerations_on_a_cpu_image_repeat_the_hub_ones() {
    let c = shipped();
    let mut image = c.image("notebook-scipy-cpu").expect("shipped").clone();
    assert!(image.profile.gpus.is_none());
    let spot = catalog::Toleration {
        key: Some("spot".into()),
        operator: Some("Exists".into()),
        toleration_seconds: Some(300),
        ..catalog::Toleration::default()
    };
    let settings = SpawnerSettings::default();
    // A toleration the hub already has is not repeated.
    image.profile.tolerations = vec![settings.base_tolerations[1].clone(), spot];
    let v = versions(&image, 1);
    let list = profile_list(
        &[Entry {
            image: &image,
            base: None,
            versions: &v,
        }],
        &settings,
    );
    let tolerations = list[0].kubespawner_override["tolerations"]
        .as_array()
        .expect("a list");
    assert_eq!(tolerations.len(), 3);
    assert_eq!(tolerations[0]["key"], json!("hub.jupyter.org/dedicated"));
    assert_eq!(tolerations[1]["key"], json!("hub.jupyter.org_dedicated"));
    assert_eq!(
        tolerations[2],
        json!({"key": "spot", "operator": "Exists", "tolerationSeconds": 300})
    );
    assert_eq!(check(&json_of(&list)), Vec::<Violation>::new());
}

#[test]
fn exactly_one_profile_is_the_default() {
    let (c, list) = shipped_list(&SpawnerSettings::default());
    let defaults: Vec<&str> = list
        .iter()
        .filter(|p| p.default)
        .map(|p| p.slug.as_str())
        .collect();
    let catalog_default: Vec<&str> = c
        .images
        .iter()
        .filter(|i| i.profile.default)
        .map(|i| i.profile.slug.as_str())
        .collect();
    assert_eq!(catalog_default.len(), 1);
    assert_eq!(defaults, catalog_default);

    // Without the catalog's default among the entries, the first one is.
    let c = shipped();
    let mut images = select(&c, &["deeplearning", "nlp"]);
    assert_eq!(images.len(), 4);
    assert!(images.iter().all(|i| !i.profile.default));
    let v = published(&images, 1);
    let list = profile_list(&entries(&c, &images, &v), &SpawnerSettings::default());
    let defaults: Vec<bool> = list.iter().map(|p| p.default).collect();
    assert_eq!(defaults, [true, false, false, false]);

    // And when two images claim it, only the first one gets it.
    images[1].profile.default = true;
    images[3].profile.default = true;
    let e: Vec<Entry<'_>> = images
        .iter()
        .zip(&v)
        .map(|(image, versions)| Entry {
            image,
            base: None,
            versions,
        })
        .collect();
    let defaults: Vec<bool> = profile_list(&e, &SpawnerSettings::default())
        .iter()
        .map(|p| p.default)
        .collect();
    assert_eq!(defaults, [false, true, false, false]);
    assert!(profile_list(&[], &SpawnerSettings::default()).is_empty());
}

#[test]
fn html_in_names_is_escaped() {
    let c = shipped();
    let mut image = c.image("grading").expect("shipped").clone();
    image.profile.display_name = r#"Grading <b>"A&B"</b>"#.into();
    image.profile.description = String::new();
    image.description = "Tom's <script>".into();
    let v = versions(&image, 1);
    let list = profile_list(
        &[Entry {
            image: &image,
            base: None,
            versions: &v,
        }],
        &SpawnerSettings::default(),
    );
    assert_eq!(
        list[0].display_name,
        "Grading &lt;b&gt;&quot;A&amp;B&quot;&lt;/b&gt;"
    );
    // An empty profile description falls back to the image's.
    assert_eq!(list[0].description, "Tom&#39;s &lt;script&gt;");
    assert_eq!(check(&json_of(&list)), Vec::<Violation>::new());
}

#[test]
fn version_choices_name_the_date_and_digest() {
    let (c, list) = shipped_list(&SpawnerSettings::default());
    let image = &c.images[0];
    let v = versions(image, 3);
    let option = &list[0].profile_options["version"];
    assert_eq!(option.display_name, "Version");
    let keys: Vec<&str> = option.choices.keys().map(String::as_str).collect();
    assert_eq!(keys, ["current", "previous", "previous-2"]);
    let current = &option.choices["current"];
    assert!(current.default);
    assert_eq!(
        current.display_name,
        format!("Current · published 2026-11-20 · {}", &v[0].digest[..19])
    );
    assert_eq!(current.description.as_deref(), Some(v[0].digest.as_str()));
    assert_eq!(current.kubespawner_override["image"], json!(v[0].reference));
    let previous = &option.choices["previous"];
    assert!(!previous.default);
    assert!(
        previous
            .display_name
            .starts_with("Previous · published 2026-11-19 · sha256:"),
        "{}",
        previous.display_name
    );
    assert_eq!(
        previous.kubespawner_override["image"],
        json!(v[1].reference)
    );
    assert!(
        option.choices["previous-2"]
            .display_name
            .contains("published 2026-11-18"),
    );
}

#[test]
fn previous_versions_limits_the_choices() {
    let c = shipped();
    let images = select(&c, &["grading"]);
    let v = published(&images, 5);
    let e = entries(&c, &images, &v);
    for (previous, expected) in [
        (0, vec!["current"]),
        (1, vec!["current", "previous"]),
        (3, vec!["current", "previous", "previous-2", "previous-3"]),
        (
            10,
            vec![
                "current",
                "previous",
                "previous-2",
                "previous-3",
                "previous-4",
            ],
        ),
    ] {
        let settings = SpawnerSettings {
            previous_versions: previous,
            ..SpawnerSettings::default()
        };
        let list = profile_list(&e, &settings);
        let keys: Vec<&str> = list[0].profile_options["version"]
            .choices
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, expected, "previous_versions = {previous}");
        assert_eq!(check(&json_of(&list)), Vec::<Violation>::new());
    }
}

#[test]
fn deeplearning_profile_list_snapshot() {
    let list = list_of(&["deeplearning"], 2, &SpawnerSettings::default());
    let text = serde_json::to_string_pretty(&list).expect("serializes");
    insta::assert_snapshot!(text);
}

// ---------------------------------------------------------------- check

const IMG: &str = "registry.example.edu/labforge/notebook:2026.11@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// Check the JSON (with `$P` a valid default profile, `$O` the head of
/// one, `$IMG` a pinned image); each violation, in order, must contain the
/// expected text, and there must be no other. Returns a description of the
/// mismatch, if any.
fn check_row(input: &str, expected: &[&str]) -> Option<String> {
    let text = input
        .replace("$P", r#"{"display_name":"Base","slug":"base","default":true,"kubespawner_override":{"image":"$IMG"}}"#)
        .replace("$O", r#""display_name":"A","slug":"a","default":true"#)
        .replace("$IMG", IMG);
    let value: Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => return Some(format!("bad test JSON {text}: {e}")),
    };
    let got: Vec<String> = check(&value).iter().map(ToString::to_string).collect();
    let ok = got.len() == expected.len() && got.iter().zip(expected).all(|(g, e)| g.contains(e));
    (!ok).then(|| {
        format!(
            "input: {input}\nexpected:\n  {}\ngot:\n  {}",
            expected.join("\n  "),
            got.join("\n  ")
        )
    })
}

#[track_caller]
fn check_table(rows: &[(&str, &[&str])]) {
    let failures: Vec<String> = rows
        .iter()
        .filter_map(|(input, expected)| check_row(input, expected))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn check_accepts_valid_lists() {
    check_table(&[
        ("[]", &[]),
        ("[$P]", &[]),
        // The contract's recommended shape (§8).
        (
            r#"[{"display_name": "GPU &amp; CUDA &#39;12&#39; &#8212; A100", "slug": "gpu", "description": "Tom&#x27;s",
                "default": true,
                "kubespawner_override": {
                    "image": "$IMG", "image_pull_policy": null, "cpu_limit": 4, "cpu_guarantee": 0.5,
                    "mem_limit": "16G", "mem_guarantee": 2147483648,
                    "extra_resource_limits": {"nvidia.com/gpu": "1", "ephemeral-storage": "10Gi"},
                    "extra_resource_guarantees": {"nvidia.com/gpu": 1, "ephemeral-storage": "1Gi"},
                    "node_selector": {"nvidia.com/gpu.present": "true", "old": null},
                    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
                                    {"key": "k", "operator": "Equal", "value": "v", "tolerationSeconds": 30}],
                    "environment": {"JUPYTER_USER": "{username}", "BRACES": "{{literal}}", "MONKEY_BUSINESS": "ok",
                                    "FROM": {"valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}},
                    "volumes": {"scratch": {"name": "scratch-{user_server}", "emptyDir": {}}},
                    "volume_mounts": {"scratch": {"name": "scratch-{user_server}", "mountPath": "/scratch"}},
                    "extra_labels": {"hub.labforge.io/image": "notebook"},
                    "extra_annotations": {"note": "{{x}}"},
                    "default_url": "/lab"
                },
                "profile_options": {
                    "gpus": {"display_name": "GPUs", "choices": {
                        "1": {"display_name": "1 GPU", "default": true},
                        "2": {"display_name": "2 GPUs", "default": false,
                              "kubespawner_override": {"extra_resource_limits": {"nvidia.com/gpu": "2"}}}}},
                    "custom": {"display_name": "Other", "choices": {},
                               "unlisted_choice": {"enabled": true, "display_name": "Image",
                                                   "kubespawner_override": {"image": "{value}"}}}
                }},
               {"display_name": "Pick", "slug": "pick", "default": false, "profile_options": {
                   "image": {"display_name": "Image", "choices": {
                       "a": {"display_name": "A", "kubespawner_override": {"image": "$IMG"}},
                       "b": {"display_name": "B", "kubespawner_override": {"image": "$IMG",
                             "extra_resource_limits": {"nvidia.com/gpu": 2},
                             "extra_resource_guarantees": {"nvidia.com/gpu": "2"}}}}}}},
               {"display_name": "Tolerations by name", "slug": "by-name",
                "kubespawner_override": {"image": "$IMG", "extra_resource_limits": {"nvidia.com/gpu": "1"},
                    "tolerations": {"gpu": {"key": "nvidia.com/gpu", "operator": "Exists"}}},
                "profile_options": {"more": {"display_name": "More", "choices": {
                    "x": {"display_name": "X", "kubespawner_override": {"extra_resource_guarantees": {"nvidia.com/gpu": "1"}}}}}}}
            ]"#,
            &[],
        ),
    ]);
}

#[test]
fn check_profile_rules() {
    check_table(&[
        (
            r#"{"profile_list": []}"#,
            &["the profile list must be a JSON array of profiles, not an object"],
        ),
        (
            r#"[$P, "x"]"#,
            &["[1]: a profile must be an object, not a string"],
        ),
        (
            r#"[{"slug":"a","default":true,"kubespawner_override":{"image":"$IMG"}}]"#,
            &["[0].display_name: missing"],
        ),
        (
            r#"[{"display_name":" ","slug":"a","default":true,"kubespawner_override":{"image":"$IMG"}}]"#,
            &["[0].display_name: must not be empty"],
        ),
        (
            r#"[{"display_name":5,"slug":"a","default":true,"kubespawner_override":{"image":"$IMG"}}]"#,
            &["[0].display_name: must be a string, not a number"],
        ),
        (
            r#"[{"display_name":"A","default":true,"kubespawner_override":{"image":"$IMG"}}]"#,
            &["[0].slug: missing"],
        ),
        (
            r#"[{"display_name":"A","slug":"Deep Learning","default":true,"kubespawner_override":{"image":"$IMG"}}]"#,
            &["[0].slug: \"Deep Learning\" is not a slug"],
        ),
        (
            r#"[{"display_name":"A","slug":"a-","default":true,"kubespawner_override":{"image":"$IMG"}}]"#,
            &["[0].slug: \"a-\" is not a slug"],
        ),
        (
            r#"[{"display_name":"A","slug":7,"default":true,"kubespawner_override":{"image":"$IMG"}}]"#,
            &["[0].slug: 7 is not a slug"],
        ),
        (
            r#"[$P, {"display_name":"B","slug":"base","kubespawner_override":{"image":"$IMG"}}]"#,
            &["[1].slug: \"base\" is used by an earlier profile"],
        ),
        (
            r#"[{$O,"display_name":"<b>A</b>","kubespawner_override":{"image":"$IMG"}}]"#,
            &["[0].display_name: \"<b>A</b>\" is not HTML-safe (raw < or >)"],
        ),
        (
            r#"[{$O,"description":"say \"hi\"","kubespawner_override":{"image":"$IMG"}}]"#,
            &["[0].description: \"say \\\"hi\\\"\" is not HTML-safe (raw double quote)"],
        ),
        (
            r#"[{$O,"description":"A & B","kubespawner_override":{"image":"$IMG"}}]"#,
            &["[0].description: \"A & B\" is not HTML-safe (& that is not an entity)"],
        ),
        (
            r#"[{$O,"description":"&copy;","kubespawner_override":{"image":"$IMG"}}]"#,
            &["& that is not an entity"],
        ),
        (
            r#"[{$O,"description":["x"],"kubespawner_override":{"image":"$IMG"}}]"#,
            &["[0].description: must be a string, not a list"],
        ),
        (
            r#"[$P, {"display_name":"B","slug":"b","default":"false","kubespawner_override":{"image":"$IMG"}}]"#,
            &["[1].default: \"false\" must be a JSON boolean"],
        ),
        (
            r#"[{"display_name":"A","slug":"a","kubespawner_override":{"image":"$IMG"}}]"#,
            &["no profile has \"default\": true"],
        ),
        (
            r#"[$P, {"display_name":"B","slug":"b","default":true,"kubespawner_override":{"image":"$IMG"}}, {"display_name":"C","slug":"c","default":true,"kubespawner_override":{"image":"$IMG"}}]"#,
            &[
                "[1].default: a second profile",
                "[2].default: a second profile",
            ],
        ),
        (
            r#"[{$O,"groups":["staff"],"kubespawner_override":{"image":"$IMG"}}]"#,
            &["[0].groups: unknown profile key \"groups\""],
        ),
        (r#"[{$O}]"#, &["[0]: no image"]),
        (
            r#"[{$O,"kubespawner_override":[]}]"#,
            &[
                "[0].kubespawner_override: must be an object of trait names, not a list",
                "[0]: no image",
            ],
        ),
        // Every violation is reported, not just the first.
        (
            r#"[{"display_name":"<A>","slug":"A","default":1,"kubespawner_override":{"image":"x:latest","cpu_limit":"2"}}]"#,
            &[
                "[0].display_name: \"<A>\" is not HTML-safe",
                "[0].slug: \"A\" is not a slug",
                "[0].default: 1 must be a JSON boolean",
                "[0].kubespawner_override.cpu_limit: \"2\" must be a JSON number",
                "[0].kubespawner_override.image: \"x:latest\" is not pinned",
                "no profile has \"default\": true",
            ],
        ),
    ]);
}

#[test]
fn check_override_rules() {
    check_table(&[
        (
            r#"[{$O,"kubespawner_override":{"image":"$IMG","imagee":"x"}}]"#,
            &["[0].kubespawner_override.imagee: \"imagee\" is not a known KubeSpawner trait"],
        ),
        (
            r#"[{$O,"kubespawner_override":{"image":"$IMG","lifecycleHooks":{}}}]"#,
            &["\"lifecycleHooks\" is not a known KubeSpawner trait"],
        ),
        (
            r#"[{$O,"kubespawner_override":{"image":"quay.io/jupyter/scipy-notebook:2024-12-09"}}]"#,
            &[
                "[0].kubespawner_override.image: \"quay.io/jupyter/scipy-notebook:2024-12-09\" is not pinned by digest",
            ],
        ),
        (
            r#"[{$O,"kubespawner_override":{"image":"r/n@sha256:0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef"}}]"#,
            &["is not pinned by digest"],
        ),
        (
            r#"[{$O,"kubespawner_override":{"image":"r/n@sha256:0123"}}]"#,
            &["is not pinned by digest"],
        ),
        (
            r#"[{$O,"kubespawner_override":{"image":123}}]"#,
            &["[0].kubespawner_override.image: must be a string, not a number"],
        ),
        (
            r#"[{$O,"kubespawner_override":{"image":"$IMG","image_pull_policy":"always"}}]"#,
            &[
                "[0].kubespawner_override.image_pull_policy: \"always\" is not Always, IfNotPresent, Never or null",
            ],
        ),
        (
            r#"[{$O,"kubespawner_override":{"image":"$IMG","cpu_limit":"2"}}]"#,
            &["[0].kubespawner_override.cpu_limit: \"2\" must be a JSON number"],
        ),
        (
            r#"[{$O,"kubespawner_override":{"image":"$IMG","cpu_guarantee":-1}}]"#,
            &["[0].kubespawner_override.cpu_guarantee: -1 must be a JSON number of cores >= 0"],
        ),
        (
            r#"[{$O,"kubespawner_override":{"image":"$IMG","mem_limit":"2Gi"}}]"#,
            &["[0].kubespawner_override.mem_limit: \"2Gi\" must be bytes or"],
        ),
        (
            r#"[{$O,"kubespawner_override":{"image":"$IMG","mem_limit":"16 G"}}]"#,
            &["mem_limit: \"16 G\" must be bytes"],
        ),
        (
            r#"[{$O,"kubespawner_override":{"image":"$IMG","mem_guarantee":-5}}]"#,
            &["[0].kubespawner_override.mem_guarantee: -5 must be bytes"],
        ),
        (
            r#"[{$O,"kubespawner_override":{"image":"$IMG","mem_guarantee":true}}]"#,
            &["mem_guarantee: true must be bytes"],
        ),
        (
            r#"[{$O,"kubespawner_override":{"image":"$IMG","extra_resource_limits":{"nvidia.com/gpu":0.5}}}]"#,
            &[
                "[0].kubespawner_override.extra_resource_limits[\"nvidia.com/gpu\"]: 0.5 must be a whole number",
            ],
        ),
        (
            r#"[{$O,"kubespawner_override":{"image":"$IMG","extra_resource_limits":{"nvidia.com/gpu":"1.5"}}}]"#,
            &["\"1.5\" must be a whole number"],
        ),
        (
            r#"[{$O,"kubespawner_override":{"image":"$IMG","extra_resource_limits":{"nvidia.com/gpu":-1}}}]"#,
            &["-1 must be a whole number"],
        ),
        (
            r#"[{$O,"kubespawner_override":{"image":"$IMG","extra_resource_limits":{"memory":[]}}}]"#,
            &["extra_resource_limits.memory: must be a quantity, not a list"],
        ),
        (
            r#"[{$O,"kubespawner_override":{"image":"$IMG","extra_resource_limits":["nvidia.com/gpu"]}}]"#,
            &["[0].kubespawner_override.extra_resource_limits: must be an object of resources"],
        ),
        (
            r#"[{$O,"kubespawner_override":{"image":"$IMG","extra_resource_guarantees":{"nvidia.com/gpu":"1"}}}]"#,
            &[
                "[0].kubespawner_override.extra_resource_guarantees[\"nvidia.com/gpu\"]: nvidia.com/gpu is guaranteed but not limited",
            ],
        ),
        (
            r#"[{$O,"kubespawner_override":{"image":"$IMG","extra_resource_limits":{"nvidia.com/gpu":"2"},"extra_resource_guarantees":{"nvidia.com/gpu":1}}}]"#,
            &["nvidia.com/gpu is guaranteed 1 but limited \"2\"; Kubernetes requires them equal"],
        ),
        (
            r#"[{$O,"kubespawner_override":{"image":"$IMG"},"profile_options":{"g":{"display_name":"G","choices":{"two":{"display_name":"2","kubespawner_override":{"extra_resource_guarantees":{"nvidia.com/gpu":"2"}}}}}}}]"#,
            &[
                "[0].profile_options.g.choices.two.kubespawner_override.extra_resource_guarantees[\"nvidia.com/gpu\"]: nvidia.com/gpu is guaranteed but not limited",
            ],
        ),
        (
            r#"[{$O,"kubespawner_override":{"image":"$IMG","node_selector":["gpu"]}}]"#,
            &["[0].kubespawner_override.node_selector: must be an object of strings, not a list"],
        ),
        (
            r#"[{$O,"kubespawner_override":{"image":"$IMG","node_selector":{"gpu":true}}}]"#,
            &["[0].kubespawner_override.node_selector.gpu: must be a string, not a boolean"],
        ),
        (
            r#"[{$O,"kubespawner_override":{"image":"$IMG","tolerations":"gpu"}}]"#,
            &["[0].kubespawner_override.tolerations: must be a list of tolerations"],
        ),
        (
            r#"[{$O,"kubespawner_override":{"image":"$IMG","tolerations":[3]}}]"#,
            &["[0].kubespawner_override.tolerations[0]: a toleration must be an object"],
        ),
        (
            r#"[{$O,"kubespawner_override":{"image":"$IMG","tolerations":[{"keyy":"gpu","operator":"Exists"}]}}]"#,
            &["[0].kubespawner_override.tolerations[0].keyy: \"keyy\" is not a toleration field"],
        ),
        (
            r#"[{$O,"kubespawner_override":{"image":"$IMG","tolerations":[{"key":"gpu","toleration_seconds":5}]}}]"#,
            &[
                "tolerations[0].toleration_seconds: \"toleration_seconds\" is not a toleration field",
            ],
        ),
        (
            r#"[{$O,"kubespawner_override":{"image":"$IMG","tolerations":[{"key":"gpu","operator":"In"}]}}]"#,
            &["tolerations[0].operator: \"In\" is not Equal or Exists"],
        ),
        (
            r#"[{$O,"kubespawner_override":{"image":"$IMG","tolerations":{"gpu":{"key":"gpu","effect":"NoRun"}}}}]"#,
            &["tolerations.gpu.effect: \"NoRun\" is not NoSchedule, PreferNoSchedule or NoExecute"],
        ),
        (
            r#"[{$O,"kubespawner_override":{"image":"$IMG","tolerations":[{"key":"gpu","tolerationSeconds":"5"}]}}]"#,
            &["tolerations[0].tolerationSeconds: \"5\" must be a whole number of seconds"],
        ),
        (
            r#"[{$O,"kubespawner_override":{"image":"$IMG","tolerations":[{"key":1}]}}]"#,
            &["tolerations[0].key: must be a string, not a number"],
        ),
        (
            r#"[{$O,"kubespawner_override":{"image":"$IMG","tolerations":[{"key":"gpu","operator":"Exists","value":"x"}]}}]"#,
            &["tolerations[0].value: a toleration with operator Exists must not have a value"],
        ),
        (
            r#"[{$O,"kubespawner_override":{"image":"$IMG","environment":["A=1"]}}]"#,
            &["[0].kubespawner_override.environment: must be an object of variables, not a list"],
        ),
        (
            r#"[{$O,"kubespawner_override":{"image":"$IMG","environment":{"MSG":"a {b"}}}]"#,
            &["[0].kubespawner_override.environment.MSG: \"a {b\": a single { without a closing }"],
        ),
        (
            r#"[{$O,"kubespawner_override":{"image":"$IMG","environment":{"MSG":"{\"a\": 1}"}}}]"#,
            &["is not a field KubeSpawner expands"],
        ),
        (
            r#"[{$O,"kubespawner_override":{"image":"$IMG","environment":{"MSG":"a}"}}}]"#,
            &["a single } without an opening {"],
        ),
        (
            r#"[{$O,"kubespawner_override":{"image":"$IMG","environment":{"N":4}}}]"#,
            &[
                "[0].kubespawner_override.environment.N: must be a string (or an EnvVar object), not a number",
            ],
        ),
        (
            r#"[{$O,"kubespawner_override":{"image":"$IMG","environment":{"GITHUB_TOKEN":"x"}}}]"#,
            &["environment.GITHUB_TOKEN: GITHUB_TOKEN looks like a secret"],
        ),
        (
            r#"[{$O,"kubespawner_override":{"image":"$IMG","environment":{"DB_PASSWORD":"x"}}}]"#,
            &["DB_PASSWORD looks like a secret"],
        ),
        (
            r#"[{$O,"kubespawner_override":{"image":"$IMG","environment":{"AWS_SECRET_ACCESS_KEY":"x"}}}]"#,
            &["AWS_SECRET_ACCESS_KEY looks like a secret"],
        ),
        (
            r#"[{$O,"kubespawner_override":{"image":"$IMG","environment":{"openai-api-key":"x"}}}]"#,
            &["openai-api-key looks like a secret"],
        ),
        (
            r#"[{$O,"kubespawner_override":{"image":"$IMG","extra_labels":{"team":"{group}"}}}]"#,
            &[
                "[0].kubespawner_override.extra_labels.team: \"{group}\": {group} is not a field KubeSpawner expands",
            ],
        ),
        (
            r#"[{$O,"kubespawner_override":{"image":"$IMG","extra_labels":{"n":1}}}]"#,
            &["extra_labels.n: must be a string, not a number"],
        ),
        (
            r#"[{$O,"kubespawner_override":{"image":"$IMG","extra_annotations":{"x":"a}"}}}]"#,
            &["extra_annotations.x: \"a}\": a single }"],
        ),
        (
            r#"[{$O,"kubespawner_override":{"image":"$IMG","extra_annotations":"x"}}]"#,
            &["extra_annotations: must be an object of strings, not a string"],
        ),
        (
            r#"[{$O,"kubespawner_override":{"image":"$IMG","volumes":[{"name":"scratch","emptyDir":{}}]}}]"#,
            &["[0].kubespawner_override.volumes: a list replaces the hub's volumes"],
        ),
        (
            r#"[{$O,"kubespawner_override":{"image":"$IMG","volume_mounts":[{"name":"scratch","mountPath":"/s"}]}}]"#,
            &["[0].kubespawner_override.volume_mounts: a list replaces"],
        ),
        (
            r#"[{$O,"kubespawner_override":{"image":"$IMG","volumes":{"s":"scratch"}}}]"#,
            &["volumes.s: must be an object, not a string"],
        ),
        (
            r#"[{$O,"kubespawner_override":{"image":"$IMG","volumes":{"s":{"name":"s-{x}"}}}}]"#,
            &["volumes.s.name: \"s-{x}\": {x} is not a field"],
        ),
        (
            r#"[{$O,"kubespawner_override":{"image":"$IMG","image_pull_secrets":["regcred"]}}]"#,
            &["[0].kubespawner_override.image_pull_secrets: the list is sent to the browser"],
        ),
    ]);
}

#[test]
fn check_option_rules() {
    check_table(&[
        (
            r#"[{$O,"kubespawner_override":{"image":"$IMG"},"profile_options":[]}]"#,
            &["[0].profile_options: must be an object of options, not a list"],
        ),
        (
            r#"[{$O,"kubespawner_override":{"image":"$IMG"},"profile_options":{"Big_Key":{"display_name":"B","choices":{"a":{"display_name":"A"}}}}}]"#,
            &["[0].profile_options.Big_Key: option key \"Big_Key\" is not [a-z0-9-]"],
        ),
        (
            r#"[{$O,"kubespawner_override":{"image":"$IMG"},"profile_options":{"profile":{"display_name":"P","choices":{"a":{"display_name":"A"}}}}}]"#,
            &["[0].profile_options.profile: an option may not be keyed \"profile\""],
        ),
        (
            r#"[{$O,"kubespawner_override":{"image":"$IMG"},"profile_options":{"o":"x"}}]"#,
            &["[0].profile_options.o: an option must be an object, not a string"],
        ),
        (
            r#"[{$O,"kubespawner_override":{"image":"$IMG"},"profile_options":{"o":{"choices":{"a":{"display_name":"A"}}}}}]"#,
            &["[0].profile_options.o.display_name: missing"],
        ),
        (
            r#"[{$O,"kubespawner_override":{"image":"$IMG"},"profile_options":{"o":{"display_name":"<O>","choices":{"a":{"display_name":"A"}}}}}]"#,
            &["[0].profile_options.o.display_name: \"<O>\" is not HTML-safe"],
        ),
        (
            r#"[{$O,"kubespawner_override":{"image":"$IMG"},"profile_options":{"o":{"display_name":"O"}}}]"#,
            &["[0].profile_options.o.choices: missing; always send choices"],
        ),
        (
            r#"[{$O,"kubespawner_override":{"image":"$IMG"},"profile_options":{"o":{"display_name":"O","choices":[{"display_name":"A"}]}}}]"#,
            &["[0].profile_options.o.choices: must be an object of choices, not a list"],
        ),
        (
            r#"[{$O,"kubespawner_override":{"image":"$IMG"},"profile_options":{"o":{"display_name":"O","choices":{}}}}]"#,
            &["[0].profile_options.o.choices: no choices and no enabled unlisted_choice"],
        ),
        (
            r#"[{$O,"kubespawner_override":{"image":"$IMG"},"profile_options":{"o":{"display_name":"O","choices":{},"unlisted_choice":{"enabled":false}}}}]"#,
            &["no choices and no enabled unlisted_choice"],
        ),
        (
            r#"[{$O,"kubespawner_override":{"image":"$IMG"},"profile_options":{"o":{"display_name":"O","choices":{"a":{"display_name":"A"}},"unlisted_choice":{"enabled":"yes"}}}}]"#,
            &["[0].profile_options.o.unlisted_choice.enabled: \"yes\" must be a JSON boolean"],
        ),
        (
            r#"[{$O,"kubespawner_override":{"image":"$IMG"},"profile_options":{"o":{"display_name":"O","choices":{},"unlisted_choice":{"enabled":true,"kubespawner_override":{"imag":"{value}"}}}}}]"#,
            &[
                "[0].profile_options.o.unlisted_choice.kubespawner_override.imag: \"imag\" is not a known KubeSpawner trait",
            ],
        ),
        (
            r#"[{$O,"kubespawner_override":{"image":"$IMG"},"profile_options":{"gpus":{"display_name":"G","choices":{"1.5":{"display_name":"A"}}}}}]"#,
            &["[0].profile_options.gpus.choices[\"1.5\"]: choice key \"1.5\" is not [a-z0-9-]"],
        ),
        (
            r#"[{$O,"kubespawner_override":{"image":"$IMG"},"profile_options":{"o":{"display_name":"O","choices":{"Big":{"display_name":"A"}}}}}]"#,
            &["[0].profile_options.o.choices.Big: choice key \"Big\""],
        ),
        (
            r#"[{$O,"kubespawner_override":{"image":"$IMG"},"profile_options":{"o":{"display_name":"O","choices":{"a":"A"}}}}]"#,
            &["[0].profile_options.o.choices.a: a choice must be an object, not a string"],
        ),
        (
            r#"[{$O,"kubespawner_override":{"image":"$IMG"},"profile_options":{"o":{"display_name":"O","choices":{"a":{}}}}}]"#,
            &["[0].profile_options.o.choices.a.display_name: missing"],
        ),
        (
            r#"[{$O,"kubespawner_override":{"image":"$IMG"},"profile_options":{"o":{"display_name":"O","choices":{"a":{"display_name":"A","description":"x < y"}}}}}]"#,
            &["[0].profile_options.o.choices.a.description: \"x < y\" is not HTML-safe"],
        ),
        (
            r#"[{$O,"kubespawner_override":{"image":"$IMG"},"profile_options":{"o":{"display_name":"O","choices":{"a":{"display_name":"A","default":"yes"}}}}}]"#,
            &["[0].profile_options.o.choices.a.default: \"yes\" must be a JSON boolean"],
        ),
        (
            r#"[{$O,"kubespawner_override":{"image":"$IMG"},"profile_options":{"o":{"display_name":"O","choices":{"a":{"display_name":"A","default":true},"b":{"display_name":"B","default":true}}}}}]"#,
            &[
                "[0].profile_options.o.choices.b.default: a second choice of this option is the default",
            ],
        ),
        (
            r#"[{$O,"kubespawner_override":{"image":"$IMG"},"profile_options":{"gpus":{"display_name":"G","choices":{"1":{"display_name":"1 GPU","kubespawner_override":{"cpu_limit":"2"}}}}}}]"#,
            &[
                "[0].profile_options.gpus.choices.1.kubespawner_override.cpu_limit: \"2\" must be a JSON number",
            ],
        ),
        (
            r#"[{$O,"kubespawner_override":{"image":"$IMG"},"profile_options":{"o":{"display_name":"O","choices":{"a":{"display_name":"A","kubespawner_override":"x"}}}}}]"#,
            &[
                "[0].profile_options.o.choices.a.kubespawner_override: must be an object of trait names, not a string",
            ],
        ),
        (
            r#"[{$O,"kubespawner_override":{"image":"$IMG"},"profile_options":{"o":{"display_name":"O","choices":{"a":{"display_name":"A","kubespawner_override":{"volumes":[]}}}}}}]"#,
            &["[0].profile_options.o.choices.a.kubespawner_override.volumes: a list replaces"],
        ),
        // The image only on some choices is not an image for the profile.
        (
            r#"[{$O,"profile_options":{"image":{"display_name":"I","choices":{"a":{"display_name":"A","kubespawner_override":{"image":"$IMG"}},"b":{"display_name":"B"}}}}}]"#,
            &["[0]: no image"],
        ),
        (
            r#"[{$O,"profile_options":{"image":{"display_name":"I","choices":{},"unlisted_choice":{"enabled":true,"kubespawner_override":{"image":"{value}"}}}}}]"#,
            &["[0]: no image"],
        ),
    ]);
}

#[test]
fn violation_display_has_the_path_first() {
    let v = check(&json!([{"display_name": "A", "slug": "a", "default": true}]));
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].path, "[0]");
    assert!(v[0].to_string().starts_with("[0]: no image"), "{}", v[0]);
    let v = check(&json!("x"));
    assert_eq!(v[0].path, "");
    assert!(v[0].to_string().starts_with("the profile list must be"));
}

// ---------------------------------------------------------------- yaml

/// A parsed YAML document as JSON, to compare with what the hub serves.
fn yaml_to_json(y: &Yaml) -> Value {
    match y {
        Yaml::Null => Value::Null,
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Integer(i) => json!(i),
        Yaml::Real(r) => json!(r.parse::<f64>().expect("a float")),
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Array(items) => Value::Array(items.iter().map(yaml_to_json).collect()),
        Yaml::Hash(h) => Value::Object(
            h.iter()
                .map(|(k, v)| match k {
                    Yaml::String(k) => (k.clone(), yaml_to_json(v)),
                    other => panic!("a non-string key {other:?}"),
                })
                .collect(),
        ),
        other => panic!("unexpected YAML node {other:?}"),
    }
}

fn parse_fragment(text: &str) -> Yaml {
    let mut docs = YamlLoader::load_from_str(text).expect("the fragment is YAML");
    assert_eq!(docs.len(), 1);
    docs.remove(0)
}

#[test]
fn values_fragment_round_trips_the_shipped_list() {
    let (_, list) = shipped_list(&SpawnerSettings::default());
    let text = values_fragment(&list);
    let head = format!(
        "singleuser:\n  profileList:\n    - slug: {}\n      display_name: ",
        list[0].slug
    );
    assert!(text.starts_with(&head), "{text}");
    assert!(text.ends_with('\n'));
    let doc = parse_fragment(&text);
    let back = yaml_to_json(&doc["singleuser"]["profileList"]);
    assert_eq!(back, json_of(&list));
}

#[test]
fn values_fragment_keeps_number_like_strings_as_strings() {
    let list = list_of(&["deeplearning"], 1, &SpawnerSettings::default());
    let doc = parse_fragment(&values_fragment(&list));
    let cuda = &doc["singleuser"]["profileList"][1];
    assert_eq!(cuda["slug"].as_str(), Some("deeplearning-cuda"));
    let limits = &cuda["kubespawner_override"]["extra_resource_limits"]["nvidia.com/gpu"];
    assert_eq!(limits, &Yaml::String("1".into()));
    assert_eq!(
        cuda["kubespawner_override"]["node_selector"]["nvidia.com/gpu.present"],
        Yaml::String("true".into())
    );
    assert_eq!(
        cuda["kubespawner_override"]["cpu_limit"],
        Yaml::Real("16.0".into())
    );
    // Without the catalog's default in the list, the first profile is.
    assert_eq!(cuda["default"], Yaml::Boolean(false));
    assert_eq!(
        doc["singleuser"]["profileList"][0]["default"],
        Yaml::Boolean(true)
    );
    // Choice keys "1", "2", "4" stay string keys, in order.
    let Yaml::Hash(choices) = &cuda["profile_options"]["gpus"]["choices"] else {
        panic!("choices must be a mapping");
    };
    let keys: Vec<&Yaml> = choices.keys().collect();
    assert_eq!(
        keys,
        [
            &Yaml::String("1".into()),
            &Yaml::String("2".into()),
            &Yaml::String("4".into())
        ]
    );
}

#[test]
fn values_fragment_of_no_profiles_is_an_empty_list() {
    let doc = parse_fragment(&values_fragment(&[]));
    assert_eq!(doc["singleuser"]["profileList"], Yaml::Array(Vec::new()));
}

#[test]
fn hub_volumes_are_added_to_every_profile_as_dicts_keyed_by_name() {
    let mut settings = SpawnerSettings::default();
    settings.volumes.insert(
        "datasets".into(),
        serde_json::json!({"persistentVolumeClaim": {"claimName": "datasets"}}),
    );
    settings.volume_mounts.insert(
        "datasets".into(),
        serde_json::json!({"mountPath": "/home/shared/datasets", "readOnly": true}),
    );
    let (_, list) = shipped_list(&settings);
    let value = json_of(&list);
    assert_eq!(check(&value), []);
    for profile in &list {
        let o = &profile.kubespawner_override;
        assert_eq!(
            o["volumes"]["datasets"]["persistentVolumeClaim"]["claimName"],
            "datasets"
        );
        assert_eq!(o["volumes"]["datasets"]["name"], "datasets");
        assert_eq!(
            o["volume_mounts"]["datasets"]["mountPath"],
            "/home/shared/datasets"
        );
    }
    // Without any, no volumes key at all (the hub's own stay untouched).
    let (_, plain) = shipped_list(&SpawnerSettings::default());
    assert!(
        plain
            .iter()
            .all(|p| !p.kubespawner_override.contains_key("volumes"))
    );
}
