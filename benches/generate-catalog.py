#!/usr/bin/env python3
"""Write a synthetic but realistic labforge catalog for benchmarks.

Usage:
    python3 benches/generate-catalog.py OUT_DIR [--images N] [--seed S]

Writes
    OUT_DIR/catalog/catalog.yaml     the shipped catalog.yaml (settings, bases), copied
    OUT_DIR/catalog/images/*.yaml    image files that expand to exactly N concrete images
    OUT_DIR/dockerfiles/             a copy of the shipped dockerfiles/

The mix:
  * about a fifth of the concrete images are foundation images
    (template notebook.Dockerfile.tera) on the shipped bases, each file with a
    2-axis matrix (flavour x accelerator);
  * the rest are lab images (template lab.Dockerfile.tera) whose parent is an
    earlier concrete image, up to 5 levels below the foundation; some of them
    have a 1-axis accelerator matrix with a CPU and a CUDA parent, like the
    shipped deeplearning.yaml;
  * every image gets 3-15 pip requirements (PEP 440 specifiers), some apt
    packages, VS Code extensions (Open VSX ids), tests, and a profile;
  * GPU profiles and GPU tests only on images whose chain ends on a CUDA base;
  * exactly one profile in the whole catalog has `default: true`;
  * profile slugs default to the (unique) concrete image names.

Standard library only. Deterministic for a given --seed.
"""

import argparse
import os
import random
import re
import shutil
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_DEPTH = 5  # lab levels below the foundation (level 0)

# Realistic pip requirements: (name, [specifiers...]) -> one is picked.
PIP = [
    ("numpy", [">=1.26,<2.2", "==1.26.4", "~=2.1"]),
    ("scipy", [">=1.13", "==1.14.1"]),
    ("pandas", [">=2.2", "==2.2.3", ">=2.1,<3"]),
    ("matplotlib", [">=3.9", "==3.9.2"]),
    ("seaborn", [">=0.13", "==0.13.2"]),
    ("scikit-learn", [">=1.5", "~=1.5.2"]),
    ("statsmodels", [">=0.14"]),
    ("sympy", [">=1.13", "==1.13.3"]),
    ("networkx", [">=3.3"]),
    ("torch", ["==2.5.1", ">=2.4,<2.6"]),
    ("torchvision", ["==0.20.1"]),
    ("torchaudio", ["==2.5.1"]),
    ("lightning", [">=2.4"]),
    ("tensorboard", [">=2.18"]),
    ("jax", [">=0.4.35"]),
    ("flax", [">=0.10"]),
    ("optax", [">=0.2.4"]),
    ("transformers", [">=4.46,<5"]),
    ("datasets", [">=3.1"]),
    ("tokenizers", [">=0.20"]),
    ("accelerate", [">=1.1"]),
    ("sentencepiece", [">=0.2"]),
    ("spacy", [">=3.8,<3.9"]),
    ("nltk", [">=3.9"]),
    ("gensim", [">=4.3"]),
    ("opencv-python-headless", [">=4.10"]),
    ("pillow", [">=11.0", "==11.0.0"]),
    ("scikit-image", [">=0.24"]),
    ("albumentations", [">=1.4"]),
    ("xgboost", [">=2.1"]),
    ("lightgbm", [">=4.5"]),
    ("catboost", [">=1.2"]),
    ("optuna", [">=4.1"]),
    ("mlflow", [">=2.18"]),
    ("wandb", [">=0.18"]),
    ("polars", [">=1.14"]),
    ("pyarrow", [">=18.0"]),
    ("duckdb", [">=1.1"]),
    ("sqlalchemy", [">=2.0,<2.1"]),
    ("psycopg[binary]", [">=3.2"]),
    ("requests", [">=2.32"]),
    ("httpx", [">=0.27"]),
    ("beautifulsoup4", [">=4.12"]),
    ("plotly", [">=5.24"]),
    ("bokeh", [">=3.6"]),
    ("altair", [">=5.4"]),
    ("ipywidgets", [">=8.1"]),
    ("jupyterlab-git", [">=0.50"]),
    ("nbgrader", ["==0.9.3"]),
    ("pytest", [">=8.3"]),
    ("hypothesis", [">=6.118"]),
    ("black", [">=24.10"]),
    ("ruff", [">=0.8"]),
    ("mypy", [">=1.13"]),
    ("gymnasium", [">=1.0"]),
    ("stable-baselines3", [">=2.4"]),
    ("pybullet", [">=3.2.6"]),
    ("shapely", [">=2.0"]),
    ("geopandas", [">=1.0"]),
    ("rasterio", [">=1.4"]),
    ("xarray", [">=2024.10"]),
    ("dask[dataframe]", [">=2024.11"]),
    ("numba", [">=0.60"]),
    ("cython", [">=3.0"]),
    ("biopython", [">=1.84"]),
    ("rdkit", [">=2024.3.6"]),
    ("pymc", [">=5.18"]),
    ("arviz", [">=0.20"]),
    ("qiskit", [">=1.2"]),
    ("antlr4-python3-runtime", ["==4.9.3"]),
    ("einops", [">=0.8"]),
    ("timm", [">=1.0"]),
    ("peft", [">=0.13"]),
    ("bitsandbytes", [">=0.44"]),
    ("onnx", [">=1.17"]),
    ("onnxruntime", [">=1.20"]),
    ("fastapi", [">=0.115"]),
    ("streamlit", [">=1.40"]),
    ("tqdm", [">=4.67"]),
    ("rich", [">=13.9"]),
]

APT = [
    "graphviz", "libgl1", "ffmpeg", "texlive-latex-base", "texlive-fonts-recommended",
    "pandoc", "openjdk-17-jdk-headless", "maven", "antlr4", "flex", "bison",
    "build-essential", "gdb", "valgrind", "cmake", "ninja-build", "clang",
    "r-base", "octave", "gnuplot", "sqlite3", "postgresql-client", "git-lfs",
    "htop", "tmux", "libopenblas-dev", "libhdf5-dev", "swig", "gfortran",
    "libgdal-dev", "imagemagick", "poppler-utils", "tesseract-ocr",
]

VSCODE = [
    "ms-python.python", "ms-toolsai.jupyter", "ms-toolsai.tensorboard",
    "redhat.java", "vscjava.vscode-java-debug", "mike-lischke.vscode-antlr4",
    "rust-lang.rust-analyzer", "golang.go", "James-Yu.latex-workshop",
    "REditorSupport.r", "eamodio.gitlens", "mechatroner.rainbow-csv",
    "charliermarsh.ruff", "llvm-vs-code-extensions.vscode-clangd",
    "ms-azuretools.vscode-docker", "esbenp.prettier-vscode",
    "dbaeumer.vscode-eslint", "tamasfe.even-better-toml",
]

TOPICS = [
    "ml", "stats", "vision", "nlp", "robotics", "bio", "geo", "quantum",
    "compilers", "databases", "hpc", "rl", "signal", "finance", "physics",
    "chem", "web", "security", "viz", "datasci", "llm", "audio", "optim",
    "graphs", "numerics", "control", "econ", "astro", "medimg", "ethics",
]
FLAVOURS = ["minimal", "scipy", "r", "julia", "data", "teaching", "slim", "full"]
# Accelerator value names per shipped base name (fallback: derived from the name).
ACCEL_NAMES = {
    "ubuntu-22.04": "cpu",
    "cuda-12.4-runtime": "cuda",
    "cuda-12.4-cudnn-runtime": "cudnn",
    "cuda-12.4-cudnn-devel": "devel",
}


def read_bases(text):
    """Base names and whether each is a CUDA base, from catalog.yaml's `bases:` block."""
    bases = {}
    in_bases = False
    current = None
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        indent = len(line) - len(line.lstrip(" "))
        if indent == 0:
            in_bases = line.startswith("bases:")
            current = None
            continue
        if not in_bases:
            continue
        m = re.match(r"^  ([A-Za-z0-9.\-]+):\s*$", line)
        if indent == 2 and m:
            current = m.group(1)
            bases[current] = False
        elif indent == 4 and current and re.match(r"^\s+cuda:\s*\S", line):
            bases[current] = True
    return bases


def q(s):
    """A double-quoted YAML scalar."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Gen:
    def __init__(self, n, seed, bases):
        self.n = n
        self.rng = random.Random(seed)
        self.bases = bases  # name -> is_cuda
        self.cpu_bases = [b for b, c in bases.items() if not c]
        self.cuda_bases = [b for b, c in bases.items() if c]
        if not self.cpu_bases or not self.cuda_bases:
            sys.exit("generate-catalog: catalog.yaml needs at least one CPU and one CUDA base")
        # Concrete images so far: name -> (level, is_cuda)
        self.images = {}
        self.files = {}  # file stem -> yaml text
        self.default_given = False
        self.counter = 0

    # -- helpers ----------------------------------------------------------
    def new_stem(self, prefix):
        self.counter += 1
        return f"{prefix}-{self.rng.choice(TOPICS)}-{self.counter:04d}"

    def pick_pip(self, lo, hi, exclude=()):
        k = self.rng.randint(lo, hi)
        names = [p for p in PIP if self.pkg_name(p[0]) not in exclude]
        chosen = self.rng.sample(names, k)
        return [name + self.rng.choice(specs) for name, specs in chosen]

    def pick(self, pool, lo, hi):
        return self.rng.sample(pool, self.rng.randint(lo, hi))

    @staticmethod
    def pkg_name(spec):
        return re.split(r"[\[<>=!~]", spec, maxsplit=1)[0]

    def block_packages(self, out, indent, apt, pip):
        pad = " " * indent
        if not apt and not pip:
            return
        out.append(f"{pad}packages:")
        if apt:
            out.append(f"{pad}  apt:")
            out += [f"{pad}    - {a}" for a in apt]
        if pip:
            out.append(f"{pad}  pip:")
            out += [f"{pad}    - {q(p)}" for p in pip]

    def block_vscode(self, out, indent, exts):
        if exts:
            pad = " " * indent
            out.append(f"{pad}vscode:")
            out.append(f"{pad}  extensions:")
            out += [f"{pad}    - {e}" for e in exts]

    def test_for(self, pip):
        mods = {
            "scikit-learn": "sklearn", "opencv-python-headless": "cv2", "pillow": "PIL",
            "beautifulsoup4": "bs4", "scikit-image": "skimage", "psycopg": "psycopg",
            "antlr4-python3-runtime": "antlr4", "stable-baselines3": "stable_baselines3",
            "jupyterlab-git": "jupyterlab_git", "opencv": "cv2",
        }
        names = [self.pkg_name(p) for p in pip[:3]]
        imports = ", ".join(mods.get(n, n.replace("-", "_")) for n in names)
        return f'python -c "import {imports}"'

    # -- foundation images -------------------------------------------------
    def foundation_file(self, size):
        """One foundation file with a 2-axis matrix expanding to `size` images."""
        accel_all = list(self.bases)
        # accelerator axis: 1..len(bases) values, always at least one CPU base
        # when it has more than one value; flavour axis: the rest.
        pairs = [(f, a) for a in range(1, len(accel_all) + 1) for f in range(1, 9) if f * a == size]
        if not pairs:
            raise ValueError(size)
        # prefer a 2-4 x 2-4 shape
        pairs.sort(key=lambda p: (abs(p[0] - 2) + abs(p[1] - 3)))
        n_flav, n_acc = pairs[0]
        stem = self.new_stem("base")
        accel = [self.rng.choice(self.cpu_bases)]
        others = [b for b in accel_all if b not in accel]
        accel += self.rng.sample(others, n_acc - 1)
        accel = accel[:n_acc]
        flavours = self.rng.sample(FLAVOURS, n_flav)
        topic = stem.split("-")[1]
        out = [
            f"# Synthetic foundation image for benchmarks ({n_flav} flavours x {n_acc} accelerators).",
            f"name: {stem}",
            f"description: JupyterLab and VS Code foundation for {topic} courses",
            "template: notebook.Dockerfile.tera",
            "owners: [ki-cluster-admins]",
            f"issue: {self.rng.randint(1, 999)}",
            "",
            "matrix:",
            "  flavour:",
        ]
        body_pip = self.pick_pip(3, 6)
        body_names = {self.pkg_name(p) for p in body_pip}
        for fl in flavours:
            out.append(f"    {fl}:")
            out.append(f"      label: {fl.capitalize()}")
            if fl != "minimal" and self.rng.random() < 0.7:
                extra = self.pick_pip(1, 5, exclude=body_names)
                self.block_packages(out, 6, [], extra)
        out.append("  accelerator:")
        accel_names = []
        for b in accel:
            an = ACCEL_NAMES.get(b) or re.sub(r"[^a-z0-9]+", "-", b.lower()).strip("-")
            accel_names.append(an)
            out.append(f"    {an}:")
            out.append(f"      label: {q(b)}")
            out.append(f"      base: {b}")
            if self.bases[b]:
                out.append("      profile:")
                if self.rng.random() < 0.5:
                    out.append("        gpus: 1")
                else:
                    out.append("        gpus:")
                    out.append("          choices: [1, 2]")
                    out.append("          default: 1")
                out.append("      tests:")
                out.append("        - name: nvidia-smi")
                out.append("          run: nvidia-smi")
                out.append("          gpu: true")
        out.append("")
        apt = self.pick(APT, 0, 3)
        self.block_packages(out, 0, apt, body_pip)
        self.block_vscode(out, 0, ["ms-python.python", "ms-toolsai.jupyter"])
        out += [
            "",
            "env:",
            '  BENCH_VERSION_CHECK: "1"',
            "",
            "tests:",
            "  - name: jupyterlab",
            "    run: jupyter lab --version",
            "  - name: imports",
            f"    run: {q(self.test_for(body_pip))}",
            "",
            "profile:",
            f"  display_name: {q(topic.upper() + ' notebook')}",
            "  description: JupyterLab and VS Code with Python",
        ]
        if not self.default_given:
            # The first variant (default_variant defaults to it) becomes THE default profile.
            out.append("  default: true")
            self.default_given = True
        for fl in flavours:
            for an, b in zip(accel_names, accel):
                self.images[f"{stem}-{fl}-{an}"] = (0, self.bases[b])
        self.files[stem] = "\n".join(out) + "\n"

    # -- lab images ----------------------------------------------------------
    def choose_parent(self, want_cuda=None):
        cands = [
            (name, lvl, cuda)
            for name, (lvl, cuda) in self.images.items()
            if lvl < MAX_DEPTH and (want_cuda is None or cuda == want_cuda)
        ]
        # Favour deeper parents, so that every level up to MAX_DEPTH is populated.
        weights = [1 + 2 * lvl for _, lvl, _ in cands]
        return self.rng.choices(cands, weights=weights, k=1)[0]

    def lab_common(self, out, stem, pip, topic):
        apt = self.pick(APT, 0, 4)
        self.block_packages(out, 0, apt, pip)
        self.block_vscode(out, 0, self.pick(VSCODE, 0, 4))
        if self.rng.random() < 0.4:
            out += ["", "env:", f"  {topic.upper()}_DATA: /home/jovyan/shared/{topic}"]
        if self.rng.random() < 0.2:
            out += ["", "labels:", f"  edu.example.course: {q(topic)}"]
        out += ["", "tests:", "  - name: imports", f"    run: {q(self.test_for(pip))}"]

    def profile_lines(self, stem, topic, gpu):
        out = [
            "",
            "profile:",
            f"  display_name: {q(topic.capitalize() + ' lab ' + stem.rsplit('-', 1)[1])}",
            f"  description: {q('Course environment for ' + topic)}",
            f"  groups: [course-{topic}, ki-cluster-admins]",
        ]
        if self.rng.random() < 0.3:
            out += ["  memory:", f"    limit: {self.rng.choice(['8G', '16G', '32G'])}"]
        if gpu:
            out.append("  gpus: 1")
        return out

    def lab_single(self):
        parent, lvl, cuda = self.choose_parent()
        stem = self.new_stem("lab")
        topic = stem.split("-")[1]
        pip = self.pick_pip(3, 15)
        out = [
            "# Synthetic course image for benchmarks.",
            f"name: {stem}",
            f"description: {q('Tools for the ' + topic + ' course')}",
            "template: lab.Dockerfile.tera",
            f"parent: {parent}",
            "owners: [ki-cluster-admins]",
            "",
        ]
        self.lab_common(out, stem, pip, topic)
        gpu = cuda and self.rng.random() < 0.6
        if gpu and self.rng.random() < 0.5:
            out += [
                "  - name: gpu-visible",
                "    run: nvidia-smi",
                "    gpu: true",
            ]
        out += self.profile_lines(stem, topic, gpu)
        self.images[stem] = (lvl + 1, cuda)
        self.files[stem] = "\n".join(out) + "\n"

    def lab_matrix(self):
        """A CPU and a CUDA variant on different parents (like deeplearning.yaml)."""
        p_cpu, l_cpu, _ = self.choose_parent(want_cuda=False)
        p_gpu, l_gpu, _ = self.choose_parent(want_cuda=True)
        stem = self.new_stem("lab")
        topic = stem.split("-")[1]
        pip = self.pick_pip(3, 15)
        out = [
            "# Synthetic course image with a CPU and a CUDA variant, for benchmarks.",
            f"name: {stem}",
            f"description: {q('Tools for the ' + topic + ' course, on CPU and GPU')}",
            "template: lab.Dockerfile.tera",
            "owners: [ki-cluster-admins]",
            "",
            "matrix:",
            "  accelerator:",
            "    cpu:",
            "      label: CPU",
            f"      parent: {p_cpu}",
            "    cuda:",
            "      label: CUDA",
            f"      parent: {p_gpu}",
            "      profile:",
            "        gpus: 1",
            "        memory:",
            "          limit: 64G",
            "          guarantee: 16G",
            "      tests:",
            "        - name: gpu-visible",
            "          run: nvidia-smi",
            "          gpu: true",
            "default_variant: cuda",
            "",
        ]
        self.lab_common(out, stem, pip, topic)
        out += self.profile_lines(stem, topic, gpu=False)
        self.images[f"{stem}-cpu"] = (l_cpu + 1, False)
        self.images[f"{stem}-cuda"] = (l_gpu + 1, True)
        self.files[stem] = "\n".join(out) + "\n"

    def run(self):
        foundation = max(1, round(self.n / 5))
        while len(self.images) < foundation:
            left = foundation - len(self.images)
            size = min(left, self.rng.choice([4, 6, 6, 8]))
            # sizes that fit flavours (<=8) x accelerators (<= number of bases)
            while not any(size == f * a for a in range(1, len(self.bases) + 1) for f in range(1, 9)):
                size -= 1
            self.foundation_file(size)
        while len(self.images) < self.n:
            left = self.n - len(self.images)
            if left >= 2 and self.rng.random() < 0.2:
                self.lab_matrix()
            else:
                self.lab_single()
        return self


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", help="folder to write catalog/ and dockerfiles/ into")
    ap.add_argument("--images", "-n", type=int, default=500, help="concrete images (default 500)")
    ap.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    ap.add_argument("--source", default=REPO_ROOT, help="repository with catalog/ and dockerfiles/")
    args = ap.parse_args()
    if args.images < 1:
        sys.exit("generate-catalog: --images must be at least 1")

    settings_path = os.path.join(args.source, "catalog", "catalog.yaml")
    with open(settings_path, encoding="utf-8") as f:
        settings = f.read()
    bases = read_bases(settings)
    gen = Gen(args.images, args.seed, bases).run()

    catalog = os.path.join(args.out, "catalog")
    images_dir = os.path.join(catalog, "images")
    if os.path.exists(catalog):
        shutil.rmtree(catalog)
    os.makedirs(images_dir)
    with open(os.path.join(catalog, "catalog.yaml"), "w", encoding="utf-8") as f:
        f.write(settings)
    for stem, text in gen.files.items():
        with open(os.path.join(images_dir, stem + ".yaml"), "w", encoding="utf-8") as f:
            f.write(text)
    dockerfiles = os.path.join(args.out, "dockerfiles")
    if os.path.exists(dockerfiles):
        shutil.rmtree(dockerfiles)
    shutil.copytree(os.path.join(args.source, "dockerfiles"), dockerfiles)

    levels = {}
    for lvl, _ in gen.images.values():
        levels[lvl] = levels.get(lvl, 0) + 1
    found = levels.get(0, 0)
    gpu_chains = sum(1 for _, c in gen.images.values() if c)
    print(
        f"generated {len(gen.images)} images ({found} foundation, {len(gen.images) - found} lab) "
        f"in {len(gen.files)} files; levels: "
        + ", ".join(f"{k}:{levels[k]}" for k in sorted(levels))
        + f"; {gpu_chains} on CUDA bases; into {args.out}"
    )


if __name__ == "__main__":
    main()
