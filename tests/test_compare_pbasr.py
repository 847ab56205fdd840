"""``svblur-compare preset=pbasr_tiny``: the anchor first, every other model fine-tuned
from its weights, one partially blurred test set for all, region metrics, and the PBaSR
paper's claims decided by the measured numbers."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch

from svblur.experiments import claim_lines, load_preset, run_comparison
from svblur.experiments import runner as compare
from svblur.experiments.claims import METRICS, PBASR_CLAIMS, paper_of
from svblur.models import RRDBNet
from svblur.systems import gan as gan_systems

REGIONS = ("all", "blurred", "sharp")
FINE_TUNED = ("anchor_ft_blur", "anchor_ft_mixed", "pbasr")


def _spy_anchor_loads(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """Record, per run, the anchor files and every generator's and discriminator's weights
    right after loading."""
    loads: list[dict] = []
    original = gan_systems.GANSystem.load_anchor

    def spy(self) -> None:
        original(self)
        loads.append(
            {
                "system": type(self).__name__,
                "anchor_ckpt": self.hparams.get("anchor_ckpt"),
                "anchor_discriminator_ckpt": self.hparams.get("anchor_discriminator_ckpt"),
                "branches": {
                    name: {
                        k: v.detach().clone() for k, v in getattr(self, name).state_dict().items()
                    }
                    for name, _ in self.branches
                },
                "discriminators": {
                    name: {
                        k: v.detach().clone() for k, v in getattr(self, name).state_dict().items()
                    }
                    for _, name in self.branches
                },
            }
        )

    monkeypatch.setattr(gan_systems.GANSystem, "load_anchor", spy)
    return loads


def _verdict(line: str) -> bool:
    assert ": holds" in line or ": does NOT hold" in line, line
    return ": holds" in line


def test_pbasr_tiny_preset_fine_tunes_from_the_anchor_and_tests_by_region(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    loads = _spy_anchor_loads(monkeypatch)
    cfg = load_preset(["preset=pbasr_tiny", f"out_dir={tmp_path}/res", f"log_dir={tmp_path}/logs"])
    rows = run_comparison(cfg, "svblur-compare preset=pbasr_tiny")
    assert [(r["model"], r["seed"], r["kind"]) for r in rows] == [
        (m, 0, "direct_sr") for m in ("anchor", *FINE_TUNED)
    ]
    by_model = {r["model"]: r for r in rows}

    # The anchor starts at random and exports its final generator; every other run of the
    # seed starts from exactly that export (all branches of PBaSR).
    anchor_export = tmp_path / "logs" / "compare_pbasr_tiny" / "anchor" / "seed0" / "generator.pth"
    anchor_state = torch.load(anchor_export, map_location="cpu", weights_only=True)
    final = torch.load(by_model["anchor"]["weights"], map_location="cpu", weights_only=True)
    for key, value in anchor_state.items():
        assert torch.equal(value, final["state_dict"][f"net.{key}"])
    assert [(s["system"], s["anchor_ckpt"]) for s in loads] == [
        ("GANSRTask", None),
        *(("GANSRTask", str(anchor_export)) for _ in range(2)),
        ("PBaSRTask", str(anchor_export)),
    ]
    assert list(loads[-1]["branches"]) == ["general", "blur"]
    for start in loads[1:]:
        for branch in start["branches"].values():
            assert branch.keys() == anchor_state.keys()
            assert all(torch.equal(branch[k], anchor_state[k]) for k in anchor_state)
    # ... and every discriminator of those runs starts from the anchor's discriminator (its
    # final checkpoint); the blur-conditioned one of PBaSR in its image path, with its
    # condition path at init.
    anchor_d = {
        k[len("discriminator.") :]: v
        for k, v in final["state_dict"].items()
        if k.startswith("discriminator.")
    }
    assert anchor_d
    assert loads[0]["anchor_discriminator_ckpt"] is None
    assert list(loads[-1]["discriminators"]) == ["discriminator", "blur_discriminator"]
    for start in loads[1:]:
        assert start["anchor_discriminator_ckpt"] == str(by_model["anchor"]["weights"])
        for name, disc in start["discriminators"].items():
            extra = {k for k in disc if k.startswith(("condition_conv.", "fuse."))}
            assert bool(extra) == (name == "blur_discriminator")
            assert disc.keys() - extra == anchor_d.keys()
            assert all(torch.equal(disc[k], anchor_d[k]) for k in anchor_d), name
    for model in FINE_TUNED:
        assert by_model[model]["anchor_ckpt"] == str(anchor_export)
        assert by_model[model]["anchor_discriminator_ckpt"] == str(by_model["anchor"]["weights"])
        assert "model.anchor_discriminator_ckpt=" in by_model[model]["command"]
        assert "model.anchor_ckpt=" in by_model[model]["command"]
    assert by_model["anchor"]["anchor_ckpt"] is None

    # The same fine-tuning budget: 2 iterations each (one optimizer step per generator and
    # discriminator: 2 per GANSRTask iteration, 4 per PBaSR iteration).
    assert [by_model[m]["steps"] for m in FINE_TUNED] == [4, 4, 8]

    # Every run is tested on the partially blurred test set: all three regions measured.
    for row in rows:
        for region in REGIONS:
            assert 5 < row[f"test/sr/{region}/psnr_y"] < 60, (row["model"], region)
            assert 0 < row[f"test/sr/{region}/ssim_y"] <= 1
            assert 0 <= row[f"test/sr/{region}/gmsd"] <= 1
        assert row["inference/ms"] > 0
    # The deployed generators, PBaSR's merged one included, are one plain RRDBNet.
    plain = sum(
        p.numel() for p in RRDBNet(num_features=8, num_blocks=1, growth_channels=4).parameters()
    )
    assert {r["inference/params"] for r in rows} == {plain}
    assert {r["params"] for r in rows} == {plain}

    with open(tmp_path / "res" / "compare_pbasr_tiny.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["model"] for r in table][: len(rows)] == [r["model"] for r in rows]
    # then the seed's trivial baselines, bicubic among them (kind "baseline")
    assert {r["kind"] for r in table[len(rows) :]} == {"baseline"}
    assert "bicubic" in [r["model"] for r in table[len(rows) :]]
    # bicubic is scored by region too, as the models are
    bicubic = next(r for r in table[len(rows) :] if r["model"] == "bicubic")
    for region in REGIONS:
        assert 5 < float(bicubic[f"test/sr/{region}/psnr_y"]) < 60, region
        assert 0 <= float(bicubic[f"test/sr/{region}/gmsd"]) <= 1, region
    assert table[1]["anchor_ckpt"] == str(anchor_export)
    assert float(table[3]["test/sr/blurred/psnr_y"]) == pytest.approx(
        by_model["pbasr"]["test/sr/blurred/psnr_y"]
    )

    md = (tmp_path / "res" / "compare_pbasr_tiny.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| model |"))
    assert header.startswith(
        "| model | params | whole PSNR-Y (dB) | blurred PSNR-Y (dB) | sharp PSNR-Y (dB) |"
    )
    assert "inference params | inference (ms/image) | wall (s/run) |" in header
    pbasr_cells = [c.strip() for c in md.split("| pbasr |")[1].split("\n")[0].split("|")]
    assert pbasr_cells[2] == f"{by_model['pbasr']['test/sr/blurred/psnr_y']:.2f}"
    assert "starts from the generator that the run of `anchor`" in md
    claims = md.split("## The PBaSR paper's orderings on this data\n\n")[1].split("\n\n")[0]
    lines = claims.splitlines()
    assert len(lines) == 4
    pbasr, anchor, mixed = by_model["pbasr"], by_model["anchor"], by_model["anchor_ft_mixed"]
    blurred, sharp = "test/sr/blurred/psnr_y", "test/sr/sharp/psnr_y"
    assert lines[0].startswith("- pbasr > anchor on blurred PSNR-Y (dB)")
    assert _verdict(lines[0]) == (pbasr[blurred] > anchor[blurred])
    assert lines[1].startswith("- pbasr > anchor_ft_mixed on blurred PSNR-Y (dB)")
    assert _verdict(lines[1]) == (pbasr[blurred] > mixed[blurred])
    # one seed, no spread: "not worse" is pbasr >= anchor
    assert lines[2].startswith("- pbasr >= anchor on sharp PSNR-Y (dB)")
    assert _verdict(lines[2]) == (pbasr[sharp] >= anchor[sharp])
    assert lines[3].startswith("- pbasr = anchor on inference params") and _verdict(lines[3])


def _rows(values: dict[str, list[tuple[float, float, float]]]) -> list[dict]:
    """Rows from model -> per seed (blurred PSNR-Y, sharp PSNR-Y, inference params)."""
    rows = []
    for model, runs in values.items():
        for seed, (blurred, sharp, params) in enumerate(runs):
            rows.append(
                {
                    "model": model,
                    "seed": seed,
                    "test/sr/blurred/psnr_y": blurred,
                    "test/sr/sharp/psnr_y": sharp,
                    "inference/params": params,
                }
            )
    return rows


def test_pbasr_claims_are_decided_by_the_numbers():
    assert paper_of("pbasr").claims is PBASR_CLAIMS
    assert "test/sr/sharp/psnr_y" in paper_of("pbasr").columns
    assert not any(k.startswith(("test/sr/all/", "inference/")) for k in paper_of("cmos").columns)
    assert {k for k, _, _ in METRICS} >= set(paper_of("pbasr").columns)

    # Blurred regions better; sharp 0.05 dB lower with a seed spread of ~0.14; same size.
    holds = _rows(
        {
            "anchor": [(24.0, 26.1, 100.0), (24.1, 26.3, 100.0), (24.2, 26.2, 100.0)],
            "anchor_ft_mixed": [(24.3, 26.0, 100.0), (24.4, 26.1, 100.0), (24.5, 26.0, 100.0)],
            "pbasr": [(24.6, 26.0, 100.0), (24.7, 26.2, 100.0), (24.8, 26.25, 100.0)],
        }
    )
    lines = claim_lines(holds, PBASR_CLAIMS)
    assert len(lines) == 4
    assert [_verdict(line) for line in lines] == [True, True, True, True]
    assert lines[0].endswith(": holds; 24.7000 vs 24.1000")
    assert ": holds (worse, but within seed spread);" in lines[2]

    # Worse than the mixed one-branch model on blurred regions; sharp 1 dB lower, far
    # beyond the spread; a larger deployed generator.
    fails = _rows(
        {
            "anchor": [(24.0, 26.1, 100.0), (24.1, 26.3, 100.0), (24.2, 26.2, 100.0)],
            "anchor_ft_mixed": [(24.9, 26.0, 100.0), (25.0, 26.1, 100.0), (25.1, 26.0, 100.0)],
            "pbasr": [(24.6, 25.1, 200.0), (24.7, 25.2, 200.0), (24.8, 25.3, 200.0)],
        }
    )
    lines = claim_lines(fails, PBASR_CLAIMS)
    assert [_verdict(line) for line in lines] == [True, False, False, False]
    assert lines[2].endswith(": does NOT hold; 25.2000 vs 26.2000")
    assert lines[3].startswith("- pbasr = anchor on inference params")

    # One seed: no spread, so any drop on sharp regions counts as a degradation.
    one_seed = [r for r in holds if r["seed"] == 0]
    assert [_verdict(line) for line in claim_lines(one_seed, PBASR_CLAIMS)] == [
        True,
        True,
        False,
        True,
    ]
    # Models missing from the rows leave their claims out.
    assert claim_lines([r for r in holds if r["model"] != "anchor_ft_mixed"], PBASR_CLAIMS)[
        1
    ].startswith("- pbasr >= anchor on sharp")
    assert not any(math.isnan(r["test/sr/blurred/psnr_y"]) for r in holds)


def test_the_anchor_must_run_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    def no_training(cfg, weights_path=None):
        raise AssertionError("the preset's error must come before any training")

    monkeypatch.setattr(compare, "train", no_training)

    monkeypatch.setattr(compare, "measure_baselines", lambda *args: {})
    cfg = load_preset(
        [
            "preset=pbasr_tiny",
            "only=[pbasr]",
            f"out_dir={tmp_path}/res",
            f"log_dir={tmp_path}/logs",
        ]
    )
    with pytest.raises(ValueError, match="anchor=anchor: .* must be the preset's first model"):
        run_comparison(cfg, "x")
