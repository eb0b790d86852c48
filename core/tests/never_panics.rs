//! Validation never panics, whatever the input: arbitrary text, and
//! arbitrary documents built from the catalog's own vocabulary (so that the
//! deeper checks are reached, not only the YAML parser).

use std::collections::BTreeMap;

use labforge_core::analyze;
use labforge_core::catalog::{SourceFile, Sources};
use labforge_core::render::{BuildEnv, TemplateSet};
use proptest::prelude::*;
use serde_json::Value;

const SETTINGS: &str = "registry: {host: 127.0.0.1:5000}\nbases:\n  os: {image: 'debian:bookworm'}\n  gpu: {image: 'nvidia/cuda:12.4.1-runtime-ubuntu22.04', cuda: 12.4.1, min_driver: 550.54.15}\n";

const KEYS: &[&str] = &[
    "name",
    "description",
    "template",
    "base",
    "parent",
    "matrix",
    "exclude",
    "default_variant",
    "packages",
    "apt",
    "pip",
    "conda",
    "vscode",
    "extensions",
    "env",
    "labels",
    "build_args",
    "tests",
    "run",
    "gpu",
    "timeout",
    "profile",
    "display_name",
    "slug",
    "default",
    "gpus",
    "choices",
    "cpu",
    "memory",
    "limit",
    "guarantee",
    "node_selector",
    "tolerations",
    "key",
    "operator",
    "effect",
    "groups",
    "owners",
    "issue",
    "label",
    "x",
    "os",
    "a",
    "b",
];
const WORDS: &[&str] = &[
    "a",
    "b",
    "x",
    "os",
    "gpu",
    "t.Dockerfile.tera",
    "numpy>=1",
    "torch==2.*.1",
    "8G",
    "8Gi",
    "Exists",
    "-oX",
    "pkg @ https://x",
    "{{ x }}",
    "{% if %}",
    "ms-python.python",
    "",
    "\u{200b}",
    "nvidia.com/gpu",
    "a-b",
    "main",
];

fn settings() -> SourceFile {
    SourceFile {
        path: "catalog.yaml".into(),
        text: SETTINGS.into(),
    }
}

fn templates() -> TemplateSet {
    TemplateSet {
        templates: BTreeMap::from([(
            "t.Dockerfile.tera".to_string(),
            "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n{% if files.pip %}COPY {{ files.pip }} /r\n{% endif %}ENV X={{ image.name | dq }}\n".to_string(),
        )]),
        files: BTreeMap::new(),
    }
}

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-1e6f64..1e6).prop_map(Value::from),
        prop::sample::select(WORDS).prop_map(|w| Value::String(w.to_string())),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop::sample::select(KEYS).prop_map(String::from),
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn image_doc() -> impl Strategy<Value = Value> {
    (
        value(),
        prop::sample::select(&["os", "gpu", "a", "b"][..]),
        any::<bool>(),
    )
        .prop_map(|(extra, base, use_parent)| {
            let mut doc = serde_json::Map::new();
            doc.insert("name".into(), Value::String("a".into()));
            doc.insert("template".into(), Value::String("t.Dockerfile.tera".into()));
            doc.insert(
                if use_parent { "parent" } else { "base" }.into(),
                Value::String(base.into()),
            );
            if let Value::Object(m) = extra {
                doc.extend(m);
            }
            Value::Object(doc)
        })
}

fn run(images: Vec<(String, String)>) {
    let sources = Sources {
        settings: settings(),
        images: images
            .into_iter()
            .map(|(name, text)| SourceFile {
                path: format!("images/{name}.yaml"),
                text,
            })
            .collect(),
    };
    // Either outcome is fine; a panic fails the test.
    let _ = analyze(&sources, templates(), &BuildEnv::default());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_text(text in "\\PC{0,300}") {
        run(vec![("a".into(), text.clone())]);
        let sources = Sources { settings: SourceFile { path: "catalog.yaml".into(), text }, images: vec![] };
        let _ = analyze(&sources, templates(), &BuildEnv::default());
    }

    #[test]
    fn yaml_shaped_text(text in "([a-z_]{1,8}: ?|- |  |\\[|\\]|\\{|\\}|,|\"|'|&a |\\*a|!tag |#|\n|[0-9.]{1,4}|[a-z]{1,5}){0,60}") {
        run(vec![("a".into(), text)]);
    }

    #[test]
    fn documents_in_the_catalog_vocabulary(a in image_doc(), b in image_doc()) {
        let mut b = b;
        if let Value::Object(m) = &mut b {
            m.insert("name".into(), Value::String("b".into()));
        }
        // JSON is YAML: this reaches decoding, expansion, checks and rendering.
        run(vec![("a".into(), a.to_string()), ("b".into(), b.to_string())]);
    }
}
