//! The issue form requesters use (`.github/ISSUE_TEMPLATE/image-request.yml`)
//! stays in step with the catalog and with the hub's "request a change"
//! link: its `based-on` dropdown lists exactly the shipped catalog's
//! concrete images, and the field ids the link fills in exist.

use std::path::PathBuf;

use labforge_builder::Layout;
use yaml_rust2::{Yaml, YamlLoader};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn form() -> Yaml {
    let path = root()
        .join(".github/ISSUE_TEMPLATE")
        .join(labforge_hub::snapshot::ISSUE_FORM);
    let text = std::fs::read_to_string(&path).expect("the issue form exists");
    YamlLoader::load_from_str(&text)
        .expect("the issue form is YAML")
        .pop()
        .expect("one document")
}

fn field<'a>(form: &'a Yaml, id: &str) -> &'a Yaml {
    form["body"]
        .as_vec()
        .expect("a body list")
        .iter()
        .find(|item| item["id"].as_str() == Some(id))
        .unwrap_or_else(|| panic!("the issue form has no field with id {id:?}"))
}

#[test]
fn hub_form_based_on_lists_exactly_the_shipped_images() {
    let form = form();
    let based_on = field(&form, labforge_hub::snapshot::FORM_BASED_ON);
    assert_eq!(based_on["type"].as_str(), Some("dropdown"));
    let options: Vec<&str> = based_on["attributes"]["options"]
        .as_vec()
        .expect("options")
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    let layout = Layout {
        catalog: root().join("catalog"),
        dockerfiles: root().join("dockerfiles"),
    };
    let sources = layout.read_catalog().expect("the shipped catalog reads");
    let catalog = labforge_core::catalog::load(&sources).expect("the shipped catalog is valid");
    let names: Vec<&str> = catalog.images.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(
        options, names,
        "the form's based-on options must be the catalog's concrete images, in catalog order"
    );
}

#[test]
fn hub_form_has_the_fields_a_request_needs() {
    let form = form();
    assert_eq!(form["labels"][0].as_str(), Some("image-request"));
    for id in [
        "name", "based-on", "gpu", "pip", "apt", "vscode", "course", "why",
    ] {
        let f = field(&form, id);
        assert!(
            f["attributes"]["label"]
                .as_str()
                .is_some_and(|l| !l.is_empty()),
            "{id} has a label"
        );
    }
    // Ids GitHub accepts in a pre-fill URL: no spaces or other characters
    // that would need escaping.
    for item in form["body"].as_vec().expect("a body") {
        if let Some(id) = item["id"].as_str() {
            assert!(
                id.chars().all(|c| c.is_ascii_lowercase() || c == '-'),
                "{id}"
            );
        }
    }
}
