"""Derived weights: an upload whose stem and encoder come from another team's upload, or from a
reference checkpoint the organizers list, is found by its fingerprint and shown to the
organizers (intake record, `harness status`), never to the teams, and never rejected for it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from jobs_helpers import write_tiny_dataset, write_tiny_task

from harness.cli import main
from harness.runs import ResultsLayout
from harness.submission.fingerprint import SAMPLES, compare, fingerprint

REPO = Path(__file__).resolve().parents[1]
PATCH = (64, 64, 64)
#: AdamW steps of a "lightly further-trained" copy: one moves every weight by about the lr (1e-3),
#: as much as a few steps of a real schedule's end; more only costs test time on a CPU.
STEPS = 1


def _network(seed: int) -> torch.nn.Module:
    from harness.models import build_network

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_network("ResEncL", input_channels=1, num_classes=1, patch_size=PATCH)


def _state(network: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in network.state_dict().items()}


@pytest.fixture(scope="module")
def origin() -> dict:
    """A ResEnc-L, two copies trained further (``STEPS`` AdamW steps, lr 1e-3, a real backward
    pass, each on other random data) and an independent one of another seed."""
    before = _state(_network(0))
    return {
        "origin": before,
        "trained": _trained(before, data_seed=5),
        "trained_other_data": _trained(before, data_seed=6),
        "independent": _state(_network(1)),
    }


def _trained(weights: dict[str, torch.Tensor], data_seed: int) -> dict[str, torch.Tensor]:
    network = _network(0)
    network.load_state_dict(weights)
    optimizer = torch.optim.AdamW(network.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(data_seed)
    network.train()
    for _ in range(STEPS):
        y = network(torch.randn((1, 1, *PATCH), generator=generator))
        y = y[0] if isinstance(y, list | tuple) else y
        loss = ((y - torch.randn(y.shape, generator=generator)) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return _state(network)


def test_a_lightly_trained_copy_is_flagged_an_independent_seed_is_not(origin):
    fp = {name: fingerprint(weights, "ResEncL") for name, weights in origin.items()}
    moved = [k for k in fp["origin"]["tensors"] if not torch.equal(origin["origin"][k], origin["trained"][k])]
    assert len(moved) > 100  # the training did change the encoder
    trained = compare(fp["origin"], fp["trained"])
    assert trained["similar"] and trained["share"] == 1.0 and trained["median"] > 0.95, trained
    independent = compare(fp["origin"], fp["independent"])
    assert not independent["similar"] and independent["share"] == 0.0, independent
    assert abs(independent["median"]) < 0.05, independent
    # only stem and encoder, each tensor's values at most SAMPLES of them
    assert all(k.startswith(("encoder.", "stem.")) for k in fp["origin"]["tensors"])
    assert not any(k.startswith("decoder.") for k in fp["origin"]["tensors"])
    assert compare(fp["origin"], fp["origin"])["median"] == 1.0
    # two trainings of one initialisation on other data: their norm weights, which start at 1 in
    # every network, part by their data, so vectors are not compared; the kernels stay alike
    siblings = compare(fp["trained"], fp["trained_other_data"])
    assert siblings["similar"] and siblings["share"] == 1.0, siblings
    big = next(k for k, v in origin["origin"].items() if k in fp["origin"]["tensors"] and v.numel() > SAMPLES)
    assert len(fp["origin"]["tensors"][big]["values"]) == len(fp["trained"]["tensors"][big]["values"])


def test_noise_far_below_the_weights_is_flagged(origin):
    weights = origin["origin"]
    generator = torch.Generator().manual_seed(3)
    noisy = {
        k: v + 1e-6 * (v.std() if v.numel() > 1 else 1) * torch.randn(v.shape, generator=generator)
        for k, v in weights.items()
    }
    figures = compare(fingerprint(weights, "ResEncL"), fingerprint(noisy, "ResEncL"))
    assert figures["similar"] and figures["share"] == 1.0 and figures["min"] > 0.999, figures


def test_positions_are_the_same_in_every_file_and_aliases_count_once(origin):
    """The sample of a key does not depend on the file (its name seeds it); ResEnc-L's
    ``decoder.encoder.*`` aliases are not transferred keys and do not repeat the encoder."""
    a = fingerprint(origin["origin"], "ResEncL")
    b = fingerprint(dict(reversed(list(origin["origin"].items()))), "ResEncL")
    assert a["tensors"] == b["tensors"]
    assert json.loads(json.dumps(a)) == a  # JSON as it is


CHALLENGE = """\
name: simchal
tracks: [ResEncL, PrimusM]
inbox: inbox
reference_checkpoints: [{reference}]
phases:
  - name: val
    tasks: {tasks}
    submission_limit: 3
"""


def _noisy(base: Path, out: Path, scale: float, seed: int) -> Path:
    """``base`` with Gaussian noise of ``scale`` times each tensor's spread: a modified copy."""
    from harness.submission.fingerprint import distinct_tensors

    checkpoint = torch.load(base, map_location="cpu", weights_only=True, mmap=True)
    generator = torch.Generator().manual_seed(seed)
    # in place (the mapping is private copy-on-write): aliases keep sharing storage in the copy
    for v in distinct_tensors(checkpoint["network_weights"]).values():
        if v.numel() > 1:
            v.add_((scale * float(v.float().std()) * torch.randn(v.shape, generator=generator)).to(v.dtype))
    torch.save(checkpoint, out)
    return out


def test_intake_lists_derived_uploads_for_the_organizers_only(
    resencl_checkpoint, resencl_fp16_checkpoint, primus64_checkpoint, tmp_path, capsys
):
    inbox = tmp_path / "inbox" / "val"
    for team in ("alpha", "beta", "gamma", "delta"):
        (inbox / team).mkdir(parents=True)
    os.link(resencl_checkpoint, inbox / "alpha" / "a.pth")
    os.link(resencl_fp16_checkpoint, inbox / "gamma" / "g.pth")  # another seed: independent
    _noisy(resencl_checkpoint, inbox / "beta" / "b.pth", 1e-2, seed=1)  # alpha's, lightly modified
    _noisy(primus64_checkpoint, inbox / "delta" / "d.pth", 1e-2, seed=2)  # the public reference's
    for i, name in enumerate(("alpha/a.pth", "gamma/g.pth", "beta/b.pth", "delta/d.pth")):
        os.utime(inbox / name, (1_700_000_000 + i, 1_700_000_000 + i))  # upload order
    write_tiny_dataset(tmp_path / "data" / "Seg")  # feedback reads the phase's tasks
    write_tiny_task(tmp_path / "reg", "Seg", "Seg")
    challenge = tmp_path / "challenge.yaml"
    challenge.write_text(CHALLENGE.format(reference=primus64_checkpoint, tasks=tmp_path / "reg"))
    results = tmp_path / "results"
    rc = main(["intake", "--challenge", str(challenge), "--results", str(results)])
    out = capsys.readouterr()
    assert rc == 0, out.out + out.err
    layout = ResultsLayout(results)
    record = json.loads(layout.phase_intake("simchal", "val").read_text())
    ups = {u["name"]: u for u in record["uploads"]}
    assert all(u["status"] == "accepted" for u in ups.values()), [u["reasons"] for u in ups.values()]
    alpha, beta, gamma, delta = (ups[n] for n in ("alpha/a.pth", "beta/b.pth", "gamma/g.pth", "delta/d.pth"))
    assert alpha["similar"] == [] and gamma["similar"] == []  # the independent one matches nothing
    (pair,) = beta["similar"]
    assert (pair["entry"], pair["team"], pair["file"]) == (alpha["entry"], "alpha", alpha["file"])
    assert pair["share"] == 1.0 and pair["median"] > 0.99
    (ref,) = delta["similar"]
    assert ref["reference"] == str(primus64_checkpoint) and ref["share"] == 1.0
    assert f"{beta['entry']} is similar to entry {alpha['entry']} of team 'alpha'" in out.out
    phase = layout.phase("simchal", "val")
    assert json.loads(phase.intake_record(beta["entry"]).read_text())["similar"] == beta["similar"]
    assert layout.reference_fingerprints("simchal").is_file()  # made once, kept

    assert main(["status", "--results", str(phase.root), "--json"]) == 0
    similar = json.loads(capsys.readouterr().out)["similar"]
    assert [(s["entry"], s["other"].get("entry"), s["other"].get("reference")) for s in similar] == [
        (beta["entry"], alpha["entry"], None),
        (delta["entry"], None, str(primus64_checkpoint)),
    ]
    assert main(["status", "--results", str(phase.root)]) == 0
    text = capsys.readouterr().out
    assert f"  {beta['entry']} ({beta['file']}) ~ {alpha['entry']} ({alpha['file']}): 100% of" in text

    assert main(["feedback", "--challenge", str(challenge), "--phase", "val", "--results", str(results)]) == 0
    capsys.readouterr()
    for team in ("alpha", "beta", "delta"):
        for path in (layout.feedback_json("simchal", "val", team), layout.feedback_html("simchal", "val", team)):
            shown = path.read_text()
            assert "similar" not in shown and str(primus64_checkpoint) not in shown, path
            assert "alpha" not in shown or team == "alpha", path
    # a second intake finds nothing new and changes nothing
    before = layout.phase_intake("simchal", "val").read_bytes()
    assert main(["intake", "--challenge", str(challenge), "--results", str(results)]) == 0
    assert layout.phase_intake("simchal", "val").read_bytes() == before


def test_a_reference_checkpoint_that_is_missing_is_an_error_naming_it(tmp_path, capsys):
    challenge = tmp_path / "challenge.yaml"
    challenge.write_text(CHALLENGE.format(reference="public/none.pth", tasks=REPO / "task_registry" / "toy"))
    assert main(["intake", "--challenge", str(challenge), "--results", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "reference_checkpoints" in err and str(tmp_path / "public" / "none.pth") in err
