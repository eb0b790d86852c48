//! Table tests of catalog validation: each malformed catalog must give the
//! right message at the right place, and nothing else.

use super::*;

const SETTINGS: &str = "\
registry:
  host: registry.example.edu
  prefix: labforge
bases:
  ubuntu:
    image: ubuntu:22.04
  cuda-12.4:
    image: nvidia/cuda:12.4.1-runtime-ubuntu22.04
    cuda: 12.4.1
    min_driver: 550.54.15
";

const BASE_IMAGE: &str = "\
name: base
template: t.Dockerfile.tera
base: ubuntu
";

fn sources(settings: &str, images: &[(&str, &str)]) -> Sources {
    Sources {
        settings: SourceFile {
            path: "catalog/catalog.yaml".into(),
            text: settings.into(),
        },
        images: images
            .iter()
            .map(|(name, text)| SourceFile {
                path: format!("catalog/images/{name}.yaml"),
                text: (*text).into(),
            })
            .collect(),
    }
}

/// Every diagnostic, in order, must start with the expected line.
#[track_caller]
fn check(settings: &str, images: &[(&str, &str)], expected: &[&str]) {
    let got: Vec<String> = match load(&sources(settings, images)) {
        Ok(_) => Vec::new(),
        Err(diags) => diags.iter().map(ToString::to_string).collect(),
    };
    let ok = got.len() == expected.len() && got.iter().zip(expected).all(|(g, e)| g.starts_with(e));
    assert!(
        ok,
        "expected:\n  {}\ngot:\n  {}",
        expected.join("\n  "),
        got.join("\n  ")
    );
}

#[track_caller]
fn check_image(name: &str, text: &str, expected: &[&str]) {
    check(SETTINGS, &[("base", BASE_IMAGE), (name, text)], expected);
}

#[test]
fn minimal_catalog_is_valid() {
    check(SETTINGS, &[("base", BASE_IMAGE)], &[]);
    let c = load(&sources(SETTINGS, &[("base", BASE_IMAGE)])).expect("valid");
    assert_eq!(c.images.len(), 1);
    assert_eq!(c.images[0].variant, "main");
    assert_eq!(c.images[0].profile.slug, "base");
}

#[test]
fn bad_version_specifier() {
    check_image(
        "deepml",
        "name: deepml\ntemplate: t.Dockerfile.tera\nparent: base\npackages:\n  pip:\n    - numpy\n    - scipy>=1.13\n    - pandas\n    - torch==2.*.1\n",
        &[
            r#"catalog/images/deepml.yaml:9:7: packages.pip[3]: "torch==2.*.1" is not a valid version specifier"#,
        ],
    );
}

#[test]
fn pip_direct_reference_marker_and_option() {
    check_image(
        "x",
        "name: x\ntemplate: t.Dockerfile.tera\nparent: base\npackages:\n  pip:\n    - pkg @ https://evil.example/x.whl\n    - \"numpy; sys_platform == 'linux'\"\n    - --index-url=https://evil.example\n",
        &[
            r#"catalog/images/x.yaml:6:7: packages.pip[0]: "pkg @ https://evil.example/x.whl" is a direct reference"#,
            r#"catalog/images/x.yaml:7:7: packages.pip[1]: "numpy; sys_platform == 'linux'" has an environment marker"#,
            r#"catalog/images/x.yaml:8:7: packages.pip[2]: "--index-url=https://evil.example" is a pip option"#,
        ],
    );
}

#[test]
fn apt_option_and_bad_name() {
    check_image(
        "x",
        "name: x\ntemplate: t.Dockerfile.tera\nparent: base\npackages:\n  apt: [\"-oDPkg::Pre-Invoke=touch /tmp/x\", Vim]\n",
        &[
            r#"catalog/images/x.yaml:5:9: packages.apt[0]: "-oDPkg::Pre-Invoke=touch /tmp/x" is an apt option"#,
            r#"catalog/images/x.yaml:5:44: packages.apt[1]: "Vim" is not a valid Debian package name"#,
        ],
    );
}

#[test]
fn conda_channel() {
    check_image(
        "x",
        "name: x\ntemplate: t.Dockerfile.tera\nparent: base\npackages:\n  conda:\n    - conda-forge::numpy\n",
        &[r#"catalog/images/x.yaml:6:7: packages.conda[0]: "conda-forge::numpy" names a channel"#],
    );
}

#[test]
fn openvsx_id() {
    check_image(
        "x",
        "name: x\ntemplate: t.Dockerfile.tera\nparent: base\nvscode:\n  extensions: [ms-python.python, python]\n",
        &[
            r#"catalog/images/x.yaml:5:34: vscode.extensions[1]: "python" is not an Open VSX extension id"#,
        ],
    );
}

#[test]
fn unknown_key_with_suggestion() {
    check_image(
        "x",
        "name: x\ntemplate: t.Dockerfile.tera\nparent: base\npakages:\n  pip: [numpy]\n",
        &[r#"catalog/images/x.yaml:4:1: unknown key "pakages" (allowed: name, description"#],
    );
    let d = load(&sources(
        SETTINGS,
        &[
            ("base", BASE_IMAGE),
            (
                "x",
                "name: x\ntemplate: t.Dockerfile.tera\nparent: base\npakages: {}\n",
            ),
        ],
    ))
    .expect_err("invalid");
    assert!(
        d[0].message.ends_with(r#"did you mean "packages"?"#),
        "{}",
        d[0]
    );
}

#[test]
fn unknown_base_and_parent() {
    check_image(
        "x",
        "name: x\ntemplate: t.Dockerfile.tera\nbase: ubunt\n",
        &[
            r#"catalog/images/x.yaml:3:7: base: x: unknown base "ubunt" (bases in catalog.yaml: cuda-12.4, ubuntu)"#,
        ],
    );
    check_image(
        "x",
        "name: x\ntemplate: t.Dockerfile.tera\nparent: bsae\n",
        &[r#"catalog/images/x.yaml:3:9: parent: x: unknown parent image "bsae""#],
    );
}

#[test]
fn parent_cycle() {
    check(
        SETTINGS,
        &[
            ("a", "name: a\ntemplate: t.Dockerfile.tera\nparent: b\n"),
            ("b", "name: b\ntemplate: t.Dockerfile.tera\nparent: a\n"),
        ],
        &[r#"catalog/images/a.yaml:3:9: parent: a: parent cycle a -> b -> a"#],
    );
}

#[test]
fn duplicate_names_from_variants() {
    check(
        SETTINGS,
        &[
            (
                "a",
                "name: a\ntemplate: t.Dockerfile.tera\nbase: ubuntu\nmatrix:\n  size:\n    b:\n    c:\n",
            ),
            (
                "a-b",
                "name: a-b\ntemplate: t.Dockerfile.tera\nbase: ubuntu\n",
            ),
        ],
        &[
            r#"catalog/images/a-b.yaml:1:7: name: the image name "a-b" is already used by catalog/images/a.yaml:1"#,
        ],
    );
}

#[test]
fn duplicate_slugs() {
    check_image(
        "x",
        "name: x\ntemplate: t.Dockerfile.tera\nparent: base\nprofile:\n  slug: base\n",
        &[
            r#"catalog/images/x.yaml:5:9: profile.slug: x: the profile slug "base" is already used by base"#,
        ],
    );
}

#[test]
fn memory_in_kubernetes_units() {
    check_image(
        "x",
        "name: x\ntemplate: t.Dockerfile.tera\nparent: base\nprofile:\n  memory:\n    limit: 8Gi\n",
        &[
            r#"catalog/images/x.yaml:6:12: profile.memory.limit: "8Gi" uses a Kubernetes suffix that KubeSpawner rejects"#,
        ],
    );
}

#[test]
fn cpu_as_string() {
    check_image(
        "x",
        "name: x\ntemplate: t.Dockerfile.tera\nparent: base\nprofile:\n  cpu:\n    limit: \"2\"\n",
        &[r#"catalog/images/x.yaml:6:12: profile.cpu.limit: must be a number, not a string"#],
    );
}

#[test]
fn fractional_gpu() {
    check_image(
        "x",
        "name: x\ntemplate: t.Dockerfile.tera\nbase: cuda-12.4\nprofile:\n  gpus: 0.5\n",
        &[r#"catalog/images/x.yaml:5:9: profile.gpus: GPUs are whole devices"#],
    );
}

#[test]
fn gpus_without_cuda() {
    check_image(
        "x",
        "name: x\ntemplate: t.Dockerfile.tera\nparent: base\nprofile:\n  gpus: 1\n",
        &[
            r#"catalog/images/x.yaml:5:9: profile.gpus: x: requests GPUs but is not built on a CUDA base"#,
        ],
    );
}

#[test]
fn gpu_test_without_cuda() {
    check_image(
        "x",
        "name: x\ntemplate: t.Dockerfile.tera\nparent: base\ntests:\n  - name: smi\n    run: nvidia-smi\n    gpu: true\n",
        &[
            r#"catalog/images/x.yaml:5:5: tests: x: the GPU test "smi" cannot run on an image without CUDA"#,
        ],
    );
}

#[test]
fn node_selector_and_toleration() {
    check_image(
        "x",
        "name: x\ntemplate: t.Dockerfile.tera\nbase: cuda-12.4\nprofile:\n  gpus: 1\n  node_selector:\n    Nvidia.com/gpu: \"true\"\n  tolerations:\n    - key: nvidia.com/gpu\n      operator: Exist\n",
        &[
            r#"catalog/images/x.yaml:7:5: profile.node_selector.Nvidia.com/gpu: "Nvidia.com/gpu" is not a valid Kubernetes label key"#,
            r#"catalog/images/x.yaml:10:17: profile.tolerations[0].operator: "Exist" is not a toleration operator (Equal or Exists)"#,
        ],
    );
}

#[test]
fn name_must_match_file() {
    check_image(
        "deepml",
        "name: deep-ml\ntemplate: t.Dockerfile.tera\nparent: base\n",
        &[
            r#"catalog/images/deepml.yaml:1:7: name: "deep-ml" does not match the file name "deepml""#,
        ],
    );
}

#[test]
fn base_and_parent_together() {
    check_image(
        "x",
        "name: x\ntemplate: t.Dockerfile.tera\nbase: ubuntu\nparent: base\n",
        &[
            r#"catalog/images/x.yaml:4:9: parent: give either base (a named base from catalog.yaml) or parent (another catalog image), not both"#,
        ],
    );
}

#[test]
fn missing_required_keys() {
    check_image(
        "x",
        "name: x\nbase: ubuntu\n",
        &[r#"catalog/images/x.yaml:1:1: missing required key "template""#],
    );
    check_image(
        "x",
        "name: x\ntemplate: t.Dockerfile.tera\n",
        &[r#"catalog/images/x.yaml:1:1: x: missing base or parent"#],
    );
}

#[test]
fn invalid_yaml_syntax() {
    check_image(
        "x",
        "name: x\ntemplate: [t.Dockerfile.tera\nbase: ubuntu\n",
        &[r#"catalog/images/x.yaml:"#],
    );
    let d = load(&sources(SETTINGS, &[("x", "name: x\n\tbase: ubuntu\n")])).expect_err("tab");
    assert!(d[0].message.starts_with("invalid YAML"), "{}", d[0]);
}

#[test]
fn env_and_labels() {
    check_image(
        "x",
        "name: x\ntemplate: t.Dockerfile.tera\nparent: base\nenv:\n  1ABC: x\n  OK: \"a\\nb\"\nlabels:\n  labforge.image: x\n",
        &[
            r#"catalog/images/x.yaml:5:3: env.1ABC: "1ABC" is not a valid environment variable name"#,
            r#"catalog/images/x.yaml:6:7: env.OK: must be a single line"#,
            r#"catalog/images/x.yaml:8:3: labels.labforge.image: "labforge.image" is reserved"#,
        ],
    );
}

#[test]
fn only_one_default_profile() {
    check(
        SETTINGS,
        &[
            (
                "a",
                "name: a\ntemplate: t.Dockerfile.tera\nbase: ubuntu\nprofile:\n  default: true\n",
            ),
            (
                "b",
                "name: b\ntemplate: t.Dockerfile.tera\nbase: ubuntu\nprofile:\n  default: true\n",
            ),
        ],
        &[
            r#"catalog/images/a.yaml:5:12: profile.default: a: only one profile may be the default (also default: b)"#,
            r#"catalog/images/b.yaml:5:12: profile.default: b: only one profile may be the default (also default: a)"#,
        ],
    );
}

#[test]
fn variants_default_and_exclude() {
    check_image(
        "x",
        "name: x\ntemplate: t.Dockerfile.tera\nparent: base\nmatrix:\n  size:\n    small:\n    large:\nexclude:\n  - colour: red\ndefault_variant: medium\n",
        &[
            r#"catalog/images/x.yaml:9:5: exclude: unknown axis "colour""#,
            r#"catalog/images/x.yaml:10:18: default_variant: "medium" is not a variant of this image (variants: small, large)"#,
        ],
    );
}

#[test]
fn settings_problems() {
    check(
        "registry:\n  host: \"registry example\"\nbases:\n  cuda:\n    image: nvidia/cuda\n    cuda: 12.4.1\n",
        &[],
        &[
            r#"catalog/catalog.yaml:2:9: registry.host: "registry example" is not a registry host"#,
            r#"catalog/catalog.yaml:5:5: bases.cuda: a CUDA base must say its minimum NVIDIA driver"#,
            r#"catalog/catalog.yaml:5:12: bases.cuda.image: "nvidia/cuda" is not an image reference with a tag or digest"#,
        ],
    );
}

#[test]
fn conflicting_package_entries_across_variants() {
    check_image(
        "x",
        "name: x\ntemplate: t.Dockerfile.tera\nparent: base\npackages:\n  pip: [numpy>=1.26]\nmatrix:\n  np:\n    two:\n      packages:\n        pip: [\"NumPy>=2\"]\n",
        &[
            r#"catalog/images/x.yaml:10:15: packages.pip: "NumPy>=2" conflicts with "numpy>=1.26" (line 5)"#,
        ],
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = "name: x\ntemplate: t.Dockerfile.tera\nparent: base\npackages:\n  pip: [\"torch==2.*.1\"]\n  apt: [Vim]\nprofile:\n  memory:\n    limit: 8Gi\n  colour: red\n";
    let d = load(&sources(SETTINGS, &[("base", BASE_IMAGE), ("x", text)])).expect_err("invalid");
    assert_eq!(d.len(), 4, "{d:#?}");
}

#[test]
fn variants_expand_with_overrides() {
    let text = "\
name: nb
template: t.Dockerfile.tera
matrix:
  flavour:
    minimal:
    scipy:
      label: SciPy
      packages:
        pip: [scipy]
  accelerator:
    cpu:
      base: ubuntu
    cuda:
      base: cuda-12.4
      profile:
        gpus: {choices: [1, 2]}
exclude:
  - {flavour: minimal, accelerator: cuda}
default_variant: scipy-cpu
packages:
  pip: [numpy]
profile:
  display_name: Notebook
  default: true
";
    let c = load(&sources(SETTINGS, &[("nb", text)])).expect("valid");
    let names: Vec<&str> = c.images.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["nb-minimal-cpu", "nb-scipy-cpu", "nb-scipy-cuda"]);
    let scipy_cuda = c.image("nb-scipy-cuda").expect("exists");
    assert_eq!(scipy_cuda.packages.pip, ["numpy", "scipy"]);
    assert_eq!(scipy_cuda.parent, ParentRef::Base("cuda-12.4".into()));
    assert_eq!(scipy_cuda.profile.display_name, "Notebook · SciPy · cuda");
    assert_eq!(
        scipy_cuda.profile.gpus,
        Some(Gpus::Choices {
            choices: vec![1, 2],
            default: 1
        })
    );
    assert!(!scipy_cuda.profile.default);
    assert!(c.image("nb-scipy-cpu").expect("exists").profile.default);
    assert_eq!(
        c.image("nb-minimal-cpu").expect("exists").packages.pip,
        ["numpy"]
    );
}

#[test]
fn unquoted_numbers_used_as_text_keep_their_spelling() {
    let settings = format!(
        "{SETTINGS}  cudnn-base:\n    image: nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04\n    cuda: 12.4\n    cudnn: 9.1\n    min_driver: 550\n"
    );
    let text = "name: x\ntemplate: t.Dockerfile.tera\nbase: cudnn-base\nenv:\n  PYVER: 3.10\n  OCT: 010\n  FLAG: true\n";
    let c = load(&sources(&settings, &[("x", text)])).expect("valid");
    let x = c.image("x").expect("x");
    assert_eq!(x.env["PYVER"], "3.10");
    assert_eq!(x.env["OCT"], "010");
    assert_eq!(x.env["FLAG"], "true");
    let base = &c.settings.bases["cudnn-base"];
    assert_eq!(
        (
            base.cuda.as_deref(),
            base.cudnn.as_deref(),
            base.min_driver.as_deref()
        ),
        (Some("12.4"), Some("9.1"), Some("550"))
    );
}

#[test]
fn a_cpu_variant_can_switch_gpus_off() {
    let text = "name: x\ntemplate: t.Dockerfile.tera\nprofile:\n  gpus: 1\nmatrix:\n  acc:\n    cpu:\n      base: ubuntu\n      profile: {gpus: 0}\n    gpu:\n      base: cuda-12.4\n";
    let c = load(&sources(SETTINGS, &[("x", text)])).expect("valid");
    assert_eq!(c.image("x-cpu").expect("cpu").profile.gpus, None);
    assert_eq!(
        c.image("x-gpu").expect("gpu").profile.gpus,
        Some(Gpus::Count(1))
    );
}

#[test]
fn gpu_placement_adds_to_the_defaults() {
    let settings = format!(
        "{SETTINGS}defaults:\n  profile:\n    tolerations: [{{key: hub.jupyter.org/dedicated, operator: Equal, value: user, effect: NoSchedule}}]\n  gpu:\n    node_selector: {{nvidia.com/gpu.present: \"true\"}}\n    tolerations: [{{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}}]\n"
    );
    let text = "name: x\ntemplate: t.Dockerfile.tera\nbase: cuda-12.4\nprofile: {gpus: 1}\n";
    let c = load(&sources(&settings, &[("x", text)])).expect("valid");
    let keys: Vec<Option<&str>> = c.images[0]
        .profile
        .tolerations
        .iter()
        .map(|t| t.key.as_deref())
        .collect();
    assert_eq!(
        keys,
        [Some("hub.jupyter.org/dedicated"), Some("nvidia.com/gpu")]
    );
    assert_eq!(
        c.images[0].profile.node_selector["nvidia.com/gpu.present"],
        "true"
    );
}

#[test]
fn defaults_profile_takes_only_resources_and_placement() {
    check(
        &format!("{SETTINGS}defaults:\n  profile:\n    gpus: 1\n"),
        &[("base", BASE_IMAGE)],
        &[
            r#"catalog/catalog.yaml:13:5: defaults.profile: unknown key "gpus" (allowed: cpu, memory, node_selector, tolerations, groups)"#,
        ],
    );
}

#[test]
fn guarantee_above_limit_after_defaults() {
    let settings = format!(
        "{SETTINGS}defaults:\n  profile:\n    cpu: {{guarantee: 0.5}}\n    memory: {{guarantee: 2G}}\n"
    );
    check(
        &settings,
        &[(
            "x",
            "name: x\ntemplate: t.Dockerfile.tera\nbase: ubuntu\nprofile:\n  cpu: {limit: 0.25}\n  memory: {limit: 1G}\n",
        )],
        &[
            r#"catalog/images/x.yaml:1:1: profile.cpu: x: the CPU guarantee 0.5 is above the limit 0.25"#,
            r#"catalog/images/x.yaml:1:1: profile.memory: x: the memory guarantee is above the limit"#,
        ],
    );
}

#[test]
fn toleration_seconds_needs_no_execute() {
    check_image(
        "x",
        "name: x\ntemplate: t.Dockerfile.tera\nparent: base\nprofile:\n  tolerations:\n    - {key: a, operator: Exists, effect: NoSchedule, tolerationSeconds: 30}\n",
        &[
            r#"catalog/images/x.yaml:6:7: profile.tolerations[0]: tolerationSeconds is only allowed with effect NoExecute"#,
        ],
    );
}

#[test]
fn variables_that_steer_installs_are_reserved() {
    check_image(
        "x",
        "name: x\ntemplate: t.Dockerfile.tera\nparent: base\nenv:\n  PIP_INDEX_URL: https://evil.example/simple\n  https_proxy: http://evil.example:3128\n  LD_PRELOAD: /tmp/x.so\n  JAVA_HOME: /usr/lib/jvm/java-17\nbuild_args:\n  PIP_EXTRA_INDEX_URL: https://evil.example\n",
        &[
            r#"catalog/images/x.yaml:5:3: env.PIP_INDEX_URL: "PIP_INDEX_URL" is reserved"#,
            r#"catalog/images/x.yaml:6:3: env.https_proxy: "https_proxy" is reserved"#,
            r#"catalog/images/x.yaml:7:3: env.LD_PRELOAD: "LD_PRELOAD" is reserved"#,
            r#"catalog/images/x.yaml:10:3: build_args.PIP_EXTRA_INDEX_URL: "PIP_EXTRA_INDEX_URL" is reserved"#,
        ],
    );
}

#[test]
fn markup_in_names_shown_to_users_is_rejected() {
    check_image(
        "x",
        "name: x\ntemplate: t.Dockerfile.tera\nparent: base\nprofile:\n  display_name: <img src=x onerror=alert(1)>\n",
        &[
            r#"catalog/images/x.yaml:5:17: profile.display_name: "<img src=x onerror=alert(1)>" contains < or >"#,
        ],
    );
}

#[test]
fn default_on_a_variant_that_is_not_the_default_variant() {
    check_image(
        "x",
        "name: x\ntemplate: t.Dockerfile.tera\nparent: base\nmatrix:\n  size:\n    small:\n    large:\n      profile: {default: true}\n",
        &[
            r#"catalog/images/x.yaml:1:1: profile.default: x-large: only the default variant's profile can be the default"#,
        ],
    );
}

#[test]
fn scan_policy_defaults_overrides_and_waivers() {
    use crate::scan::Severity;
    let settings = format!(
        "{SETTINGS}scan:\n  severity: critical\n  waivers:\n    - id: CVE-2024-0001\n      reason: only reachable with a local shell\n      expires: 2027-01-31\n      approved_by: alice\n"
    );
    let image = "name: strict\ntemplate: t.Dockerfile.tera\nparent: base\nscan:\n  severity: medium\n  fixed_only: false\n  waivers:\n    - id: PYSEC-2021-66\n      packages: [jinja2]\n      reason: templates are not user input here\n      expires: 2026-12-31\n      approved_by: bob\n";
    let c = load(&sources(
        &settings,
        &[("base", BASE_IMAGE), ("strict", image)],
    ))
    .expect("valid");
    let base = c.image("base").expect("base");
    assert_eq!(base.scan.severity, Severity::Critical);
    assert!(base.scan.fixed_only, "the default");
    assert_eq!(base.scan.unknown_severity, Severity::High, "the default");
    assert_eq!(base.scan.waivers.len(), 1);
    let strict = c.image("strict").expect("strict");
    assert_eq!(strict.scan.severity, Severity::Medium);
    assert!(!strict.scan.fixed_only);
    let ids: Vec<&str> = strict.scan.waivers.iter().map(|w| w.id.as_str()).collect();
    assert_eq!(ids, ["CVE-2024-0001", "PYSEC-2021-66"]);
    assert_eq!(strict.scan.waivers[1].packages, ["jinja2"]);
    assert_eq!(strict.scan.waivers[1].expires.to_string(), "2026-12-31");

    // No `scan:` anywhere: the built-in default policy.
    let c = load(&sources(SETTINGS, &[("base", BASE_IMAGE)])).expect("valid");
    assert_eq!(c.images[0].scan, crate::scan::policy::Policy::default());
}

#[test]
fn bad_scan_policy() {
    check_image(
        "lax",
        "name: lax\ntemplate: t.Dockerfile.tera\nparent: base\nscan:\n  severity: severe\n  fixed_only: maybe\n  waivers:\n    - id: not an id\n      reason: because\n      expires: 2027-02-30\n      approved_by: carol\n    - id: CVE-2024-1\n      expires: 2027-01-01\n",
        &[
            r#"catalog/images/lax.yaml:5:13: scan.severity: "severe" is not a severity (low, medium, high or critical)"#,
            "catalog/images/lax.yaml:6:15: scan.fixed_only: expected true or false",
            r#"catalog/images/lax.yaml:8:11: scan.waivers[0].id: "not an id" is not an advisory id"#,
            r#"catalog/images/lax.yaml:10:16: scan.waivers[0].expires: "2027-02-30" is not a day of the calendar"#,
            r#"catalog/images/lax.yaml:12:7: scan.waivers[1]: missing required key "approved_by""#,
            r#"catalog/images/lax.yaml:12:7: scan.waivers[1]: missing required key "reason""#,
        ],
    );
}
