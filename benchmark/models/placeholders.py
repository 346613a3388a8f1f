"""Template leftovers a reviewer would send back (issue 13): `fxbench validate` warns about each one, and
`--strict` (the submission workflow) refuses them.

The template (submissions/_template/) is valid YAML on purpose, so the schema cannot catch a copy whose id,
authors, url or model card were never filled in. These checks read only the submission folder and its
model.yaml; they never decide whether the model is valid, only whether the paperwork was done.
"""

from __future__ import annotations

import re
from pathlib import Path

from .spec import ModelSpec

# The template's own values (submissions/_template/model.yaml); tests/test_validate_placeholders.py checks
# that these still match the template, so a template edit cannot silently disable a check.
TEMPLATE_ID = "fxb-my-model"
TEMPLATE_NAME = "ResNet-18 (my training recipe)"
TEMPLATE_AUTHORS = frozenset({"First Author", "Second Author"})
TEMPLATE_DESCRIPTION = "A ResNet-18 trained on the FracAtlas train split."
# The template's training claim, as Training.to_json() gives it: shown on the leaderboard as the submitter's.
TEMPLATE_TRAINING = {"adversarial": True, "method": "PGD-AT", "eps": "4/255", "eps_value": 4 / 255, "norm": "linf",
                     "extra_data": False}
TEMPLATE_EXTRA = {"hardware": "1x A100, 2 h"}  # free-form, but `extra` is shown with the entry
EXAMPLE_HOSTS = re.compile(r"^https?://([^/]*\.)?example\.(org|com|net)(/|$)", re.IGNORECASE)
CARD_NAMES = ("README.md", "MODEL_CARD.md")
LARGE_WEIGHTS_MB = 25  # a fp32 ResNet-18 is 45 MB: over this, say how to keep the repository small

# Angle brackets that are markup, not placeholders: HTML tags and autolinks.
HTML_TAGS = frozenset(
    "a abbr b br code details div em h1 h2 h3 h4 h5 h6 hr i img kbd li ol p pre small span strong sub summary "
    "sup table tbody td th thead tr u ul".split()
)
ANGLE = re.compile(r"<([^<>\n]{1,120})>")


CODE = re.compile(r"```.*?```|`[^`\n]*`", re.DOTALL)


def card_placeholders(text: str) -> list[str]:
    """`<...>` placeholders left in a model card. Not placeholders: markup (`<br>`, `</sub>`, `<https://...>`),
    anything in code, and a name inside a path or string (`holdout-v1/<image_id>`)."""
    original = text
    text = CODE.sub(lambda m: " " * len(m.group(0)), text)  # same length: positions map to the original
    found = []
    for m in ANGLE.finditer(text):
        before = text[m.start() - 1] if m.start() else " "
        if before.isalnum() or before in "/_-.\"'=":
            continue
        inner = m.group(1).strip()
        if not inner or inner.startswith(("/", "!", "http://", "https://", "mailto:")):
            continue
        word = re.match(r"[A-Za-z][\w-]*", inner)
        if word and word.group(0).lower() in HTML_TAGS and (" " not in inner or "=" in inner):
            continue
        found.append(original[m.start():m.end()])
    return found


def template_leftovers(yaml_path: Path, spec: ModelSpec) -> list[str]:
    """One message per template placeholder still in the submission (empty when none)."""
    folder = yaml_path.parent
    out = []
    if spec.id == TEMPLATE_ID:
        out.append(f"id is still the template's {TEMPLATE_ID!r}: choose your own (lowercase, digits, '-')")
    elif yaml_path.name == "model.yaml" and folder.name != spec.id:
        out.append(f"id {spec.id!r} does not match its folder {folder.name!r}: submissions live in "
                   f"submissions/<id>/ (rename the folder or the id)")
    if spec.name == TEMPLATE_NAME:
        out.append(f"name is still the template's {TEMPLATE_NAME!r}")
    left = sorted(set(spec.authors) & TEMPLATE_AUTHORS)
    if left:
        out.append(f"authors still list the template's {', '.join(repr(a) for a in left)}")
    if spec.description == TEMPLATE_DESCRIPTION:
        out.append(f"description is still the template's {TEMPLATE_DESCRIPTION!r}: describe your model in a "
                   "sentence or two, or remove the line")
    if spec.training.to_json() == TEMPLATE_TRAINING:
        out.append("training is still the template's example claim (adversarial, PGD-AT, linf, eps 4/255, no extra "
                   "data), which the leaderboard shows as yours: declare your own recipe; if it really is yours, "
                   "say so in your words in training.method (e.g. 'PGD-AT, 10 steps, 100 epochs')")
    for key, value in TEMPLATE_EXTRA.items():
        if spec.extra.get(key) == value:
            out.append(f"extra.{key} is still the template's {value!r}: give your own or remove it")
    for field, url in (("url", spec.url), ("checkpoint.url", spec.checkpoint.url)):
        if url and EXAMPLE_HOSTS.match(url):
            out.append(f"{field} {url} is the template's example address: give the real one or remove it")
    cards = [folder / n for n in CARD_NAMES if (folder / n).is_file()]
    if not cards:
        out.append(f"no model card: copy the template's README.md into {folder} and fill it in")
    for card in cards:
        try:
            text = card.read_text(encoding="utf-8", errors="replace")[:200_000]
        except OSError:
            continue
        holes = card_placeholders(text)
        if holes:
            more = f" and {len(holes) - 3} more" if len(holes) > 3 else ""
            out.append(f"{card.name}: {len(holes)} template placeholder(s) left, e.g. "
                       f"{', '.join(holes[:3])}{more}")
    if spec.checkpoint.path:
        weights = folder / spec.checkpoint.path
        if weights.is_file() and weights.stat().st_size > LARGE_WEIGHTS_MB * 2**20:
            out.append(f"{spec.checkpoint.path} is {weights.stat().st_size / 2**20:.0f} MB: store it as float16 "
                       "safetensors (half the size; fxbench evaluates in float32) or host it and give "
                       "checkpoint.url with its sha256 (docs/submissions.md, Keeping weights small)")
    return out
