"""Which copy of a duplicate cluster to keep: the keep policy, its rules, and why a keeper won.

A user who deletes every copy but the keeper must keep the clean original, not the padded, watermarked
or upscaled copy. Resolution and file size point the wrong way for most edits (padding and rotation
enlarge the canvas, a PNG re-save enlarges the file), so the default policy ranks candidates by what
measures the original instead (docs/benchmarks.md, "Keeper choice", measures each rule):

``quality``
    a JPEG whose quantisation tables say it was saved at a quality :data:`QUALITY_DROP` or more below
    the best JPEG of its component is a re-compressed copy, and loses (other formats are never flagged);
``central``
    every copy was made from the original, so the original is the member whose *pixels* are closest to
    all the others: the medoid under a capped L1 difference of 32×32 thumbnails. Each edit adds its own
    difference, so two copies differ by roughly the sum of their edits, and the original by one edit
    from each. The embedding is no use here: the model was trained to make edits vanish. The cap
    (:data:`CENTRAL_CAP`) keeps one large local edit (a watermark, a mirrored region) from outweighing
    many small ones.
``detail``
    the decisive rule for pairs, where the medoid is a tie: the sharper copy, by the mean absolute
    Laplacian of the trimmed picture at 256×256 (blurred and upscaled copies lose detail). It is the
    weakest rule: on pairs of an original and one copy it picks the original 70 % of the time, against
    21 % for resolution; letting it decide near-ties of ``central`` lost accuracy on every dev split.
``resolution``, ``size``, ``oldest``, ``newest``, ``folder:PATH``
    the plain rules: most pixels, largest file, ingested first or last, inside a preferred folder.
``name``
    the shortest file name: the last resort for byte-identical copies ingested together, which tie on
    everything else. Copies tend to gain a suffix (``x (1).jpg``, ``x copy.jpg``, ``x_2.jpg``), so the
    shortest name is the likelier original, and a better guess than the order the folder was walked in.

A policy is a comma-separated list of rules, earlier rules first; ties fall through to the next rule and
end on the lowest image id. :func:`keeper_order` ranks the members of each connected component of the
duplicate graph (``central`` is measured within the component), and :func:`keeper_reason` names the
first rule that told the keeper from the runner-up. Pure numpy: the pixel signals come in as arrays
(``dedup.imaging.keeper_signals`` makes them), so this module never reads a file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from dedup.config import DEFAULT_KEEP
from dedup.errors import ConfigError

#: Rule name → how the report describes it.
RULE_WORDS = {
    "central": "closest in pixels to every other copy (the original they were made from)",
    "quality": "not re-compressed",
    "detail": "sharpest picture",
    "resolution": "highest resolution",
    "size": "largest file",
    "oldest": "ingested first",
    "newest": "ingested last",
    "name": "shortest file name (copies tend to gain a suffix)",
}
#: Rules that need the pixel signals of each member.
PIXEL_RULES = frozenset({"central", "quality", "detail"})
#: Per-channel difference (0–255) above which a thumbnail pixel counts as "different" no matter by how much.
CENTRAL_CAP = 20
#: A member of a bigger component is compared with this many others (evenly spread), to bound the cost.
CENTRAL_SAMPLE = 256
#: Scores are rounded to this many decimals, so identical pixels tie and fall through to the next rule.
CENTRAL_DECIMALS = 3
#: A JPEG whose quality is this much below the best JPEG quality of its component counts as re-compressed.
QUALITY_DROP = 10.0


@dataclass(frozen=True)
class KeepPolicy:
    """A parsed keep policy: rule names in order, ``folder:`` rules normalised to absolute paths."""

    rules: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> KeepPolicy:
        """Split and check a policy such as ``folder:/data/master,central,detail,resolution``."""
        items = [t.strip() for t in text.split(",") if t.strip()]
        if not items:
            raise ConfigError(f"the keep policy is empty; use e.g. {DEFAULT_KEEP}")
        out = []
        for item in items:
            if item.startswith("folder:") and len(item) > len("folder:"):
                # Absolute, with a trailing separator: "/data/master" must not match "/data/master-old/x.jpg".
                item = "folder:" + os.path.join(os.path.abspath(item[len("folder:") :]), "")
            elif item not in RULE_WORDS:
                raise ConfigError(
                    f"unknown keep rule {item!r}; use {', '.join(RULE_WORDS)} or folder:PATH, comma-separated"
                )
            out.append(item)
        return cls(tuple(out))

    @property
    def needs_pixels(self) -> bool:
        """Whether a rule of this policy reads the members' pixel signals."""
        return any(r in PIXEL_RULES for r in self.rules)

    def as_list(self) -> list[str]:
        """The rules, as the report JSON lists them."""
        return list(self.rules)


@dataclass(frozen=True)
class Candidate:
    """What the plain rules know of a keeper candidate (from the catalog)."""

    image_id: int
    path: str
    width: int
    height: int
    bytes: int
    ingested_at: float  # POSIX seconds


@dataclass(frozen=True)
class PixelSignals:
    """What the pixel rules know of a candidate: a 32×32 RGB thumbnail, the detail measure and, for a
    JPEG, the quality its quantisation tables were made with."""

    thumb: np.ndarray  # (32, 32, 3) uint8, the whole picture squeezed to a square
    detail: float
    jpeg_quality: float | None = None


@dataclass(frozen=True)
class KeeperFacts:
    """What :func:`keeper_order` measured within components, by image id."""

    central: dict[int, float]  # mean capped thumbnail difference to the component's other members
    recompressed: set[int]  # JPEGs at least QUALITY_DROP below their component's best JPEG quality


def central_scores(thumbs: np.ndarray) -> np.ndarray:
    """Mean capped L1 difference of each thumbnail to the others: lower is more central.

    ``thumbs`` is ``(n, d)`` uint8; a component larger than :data:`CENTRAL_SAMPLE` is compared with an
    evenly spread sample of its members. One row at a time, so memory stays at ``n * d``.
    """
    n = len(thumbs)
    if n < 2:
        return np.zeros(n)
    t = thumbs.astype(np.int16)
    ref_idx = np.unique(np.linspace(0, n - 1, min(n, CENTRAL_SAMPLE)).round().astype(np.int64))
    in_ref = np.zeros(n, dtype=bool)
    in_ref[ref_idx] = True
    ref = t[ref_idx]
    out = np.empty(n)
    for i in range(n):
        diff = np.minimum(np.abs(ref - t[i]), CENTRAL_CAP).mean(axis=1)
        # A sampled member's difference to itself is 0: leave it out of its mean.
        out[i] = diff.sum() / max(len(ref) - int(in_ref[i]), 1)
    return np.round(out, CENTRAL_DECIMALS)


def _rule_key(rule: str, c: Candidate, central: float, detail: float, recompressed: bool) -> float:
    """One rule's sort value (smaller is better)."""
    if rule == "central":
        return central
    if rule == "quality":
        return 1.0 if recompressed else 0.0
    if rule == "detail":
        return -round(detail, 4)
    if rule == "resolution":
        return -c.width * c.height
    if rule == "size":
        return -c.bytes
    if rule == "oldest":
        return c.ingested_at
    if rule == "newest":
        return -c.ingested_at
    if rule == "name":
        return len(os.path.basename(c.path))
    return 0.0 if c.path.startswith(rule[len("folder:") :]) else 1.0


def keeper_order(
    components: Sequence[Sequence[int]],
    candidates: Mapping[int, Candidate],
    signals: Mapping[int, PixelSignals],
    policy: KeepPolicy,
) -> tuple[list[int], KeeperFacts]:
    """Every candidate id, best keeper first within each component, and the per-component facts the
    rules derived (for :func:`keeper_reason`).

    ``components`` are groups of image ids that may end in one cluster (connected components of the
    duplicate graph); a member without pixel signals (its file is gone or unreadable) ranks last on the
    pixel rules. The order across components is arbitrary but total, so it can serve as one global
    preference.
    """
    central: dict[int, float] = {}
    recompressed: set[int] = set()
    for comp in components:
        with_pixels = [i for i in comp if i in signals]
        if "central" in policy.rules and len(with_pixels) > 1:
            thumbs = np.stack([signals[i].thumb.reshape(-1) for i in with_pixels])
            scores = central_scores(thumbs)
            central.update(zip(with_pixels, scores.tolist(), strict=True))
        if "quality" in policy.rules:
            qualities: dict[int, float] = {}
            for i in with_pixels:
                q = signals[i].jpeg_quality
                if q is not None:
                    qualities[i] = q
            if qualities:
                best = max(qualities.values())
                recompressed.update(i for i, q in qualities.items() if q < best - QUALITY_DROP)
    keys = {
        i: (
            *(
                _rule_key(
                    r,
                    c,
                    central.get(i, np.inf),
                    signals[i].detail if i in signals else -np.inf,
                    i in recompressed,
                )
                for r in policy.rules
            ),
            i,
        )
        for i, c in candidates.items()
    }
    order = sorted(candidates, key=keys.__getitem__)
    return order, KeeperFacts(central, recompressed)


def keeper_reason(
    keeper: Candidate,
    runner_up: Candidate,
    policy: KeepPolicy,
    signals: Mapping[int, PixelSignals],
    facts: KeeperFacts,
) -> tuple[str, str]:
    """The first rule that tells ``keeper`` from ``runner_up``: its name and the sentence saying so."""
    k, r = keeper.image_id, runner_up.image_id
    dk = signals[k].detail if k in signals else -np.inf
    dr = signals[r].detail if r in signals else -np.inf
    for rule in policy.rules:
        a = _rule_key(rule, keeper, facts.central.get(k, np.inf), dk, k in facts.recompressed)
        b = _rule_key(rule, runner_up, facts.central.get(r, np.inf), dr, r in facts.recompressed)
        if a == b:
            continue
        if rule.startswith("folder:"):
            return "folder", f"in the preferred folder {rule[len('folder:') :]}"
        if rule == "central":
            ck, cr = facts.central.get(k, np.inf), facts.central.get(r, np.inf)
            return rule, f"{RULE_WORDS[rule]}: mean difference {ck:.2f} against {cr:.2f}"
        if rule == "quality":
            qk = signals[k].jpeg_quality if k in signals else None
            qr = signals[r].jpeg_quality if r in signals else None
            return rule, f"{RULE_WORDS[rule]}: JPEG quality {qk or 'lossless or other'} against {qr}"
        if rule == "detail":
            return rule, f"{RULE_WORDS[rule]}: detail {dk:.2f} against {dr:.2f}"
        if rule == "resolution":
            return rule, f"highest resolution ({keeper.width}x{keeper.height})"
        if rule == "size":
            return rule, f"largest file ({keeper.bytes:,} bytes)"
        return rule, RULE_WORDS[rule]
    return "id", "tie on every rule: lowest image id"
