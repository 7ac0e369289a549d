"""``nnssl_adaptation_plan`` checks on hand-made plans (no checkpoint files, milliseconds)."""

from __future__ import annotations

import copy

import pytest

from harness.submission import example_adaptation_plan
from harness.submission.plan import check_adaptation_plan


@pytest.fixture
def primus_plan() -> dict:
    return copy.deepcopy(example_adaptation_plan("PrimusM"))


def test_example_plans_are_clean():
    for track in ("ResEncL", "PrimusM"):
        found = check_adaptation_plan(example_adaptation_plan(track), None)
        assert (found.errors, found.warnings) == ([], [])
        assert found.track == track
        assert found.pretrain_patch_size == (160, 160, 160)
        assert found.configuration == "onemmiso"


def test_lists_are_accepted_like_tuples(primus_plan):
    primus_plan["keys_to_in_proj"] = list(primus_plan["keys_to_in_proj"])
    primus_plan["recommended_downstream_patchsize"] = [160, 160, 160]
    primus_plan["pretrain_plan"]["configurations"]["onemmiso"]["patch_size"] = [192, 192, 64]
    found = check_adaptation_plan(primus_plan, None)
    assert found.errors == [] and found.pretrain_patch_size == (192, 192, 64)


@pytest.mark.parametrize("lpe", ["missing", None])
def test_key_to_lpe_may_be_missing_or_null(primus_plan, lpe):
    if lpe == "missing":
        del primus_plan["key_to_lpe"]
    else:
        primus_plan["key_to_lpe"] = None
    found = check_adaptation_plan(primus_plan, None)
    assert found.errors == []
    assert found.warnings == [
        f"nnssl_adaptation_plan.key_to_lpe is {'missing' if lpe else 'null'}; "
        "using 'eva.pos_embed', the PrimusM positional embedding"
    ]


def test_input_channels_must_be_one(primus_plan):
    primus_plan["pretrain_num_input_channels"] = 4
    assert check_adaptation_plan(primus_plan, None).errors == [
        "nnssl_adaptation_plan.pretrain_num_input_channels is 4; the challenge pre-trains on 1 channel"
    ]
    primus_plan["pretrain_num_input_channels"] = "1"
    assert "expected the integer 1" in check_adaptation_plan(primus_plan, None).errors[0]


def test_primus_patch_must_be_divisible_by_the_patch_embedding(primus_plan):
    primus_plan["pretrain_plan"]["configurations"]["onemmiso"]["patch_size"] = (160, 160, 100)
    found = check_adaptation_plan(primus_plan, None)
    assert found.pretrain_patch_size is None
    assert found.errors == [
        "pre-training patch size (160, 160, 100) (pretrain_plan.configurations['onemmiso'].patch_size) is not "
        "divisible by the PrimusM patch embedding (8, 8, 8)"
    ]


@pytest.mark.parametrize(
    "patch,words",
    [
        ((160, 160), "has 2 entries"),
        ("160", "is a str"),
        ((160, -8, 160), "expected 3 positive integers"),
        ((160.5, 160, 160), "expected 3 positive integers"),
    ],
)
def test_malformed_patch_size(primus_plan, patch, words):
    primus_plan["pretrain_plan"]["configurations"]["onemmiso"]["patch_size"] = patch
    found = check_adaptation_plan(primus_plan, None)
    assert len(found.errors) == 1 and words in found.errors[0]
    assert found.errors[0].startswith("nnssl_adaptation_plan.pretrain_plan.configurations['onemmiso'].patch_size")


def test_keys_must_agree_with_the_track(primus_plan):
    primus_plan["key_to_stem"] = "patch_embed"
    primus_plan["keys_to_in_proj"] = ("patch_embed.proj",)
    primus_plan["key_to_lpe"] = "pos_embed"
    assert check_adaptation_plan(primus_plan, None).errors == [
        "nnssl_adaptation_plan.key_to_stem is 'patch_embed'; the PrimusM reference expects 'down_projection'",
        "nnssl_adaptation_plan.keys_to_in_proj is ['patch_embed.proj']; the PrimusM reference expects "
        "['down_projection.proj']",
        "nnssl_adaptation_plan.key_to_lpe is 'pos_embed'; the PrimusM reference expects 'eva.pos_embed'",
    ]


def test_in_proj_keys_may_come_in_any_order():
    plan = example_adaptation_plan("ResEncL")
    plan["keys_to_in_proj"] = tuple(reversed(plan["keys_to_in_proj"]))
    assert check_adaptation_plan(plan, None).errors == []


def test_old_key_to_in_proj_spelling_is_read_with_a_warning(primus_plan):
    primus_plan["key_to_in_proj"] = primus_plan.pop("keys_to_in_proj")
    found = check_adaptation_plan(primus_plan, None)
    assert found.errors == [] and "'key_to_in_proj'" in found.warnings[0]


def test_configuration_choice(primus_plan):
    configs = primus_plan["pretrain_plan"]["configurations"]
    configs["other"] = dict(configs["onemmiso"], patch_size=(64, 64, 64))
    found = check_adaptation_plan(primus_plan, None)
    assert found.configuration == "onemmiso" and found.pretrain_patch_size == (160, 160, 160)
    assert "reading the pre-training patch size from 'onemmiso'" in found.warnings[0]

    primus_plan["pretrain_plan"]["configuration_name"] = "other"
    found = check_adaptation_plan(primus_plan, None)
    assert (found.configuration, found.pretrain_patch_size, found.warnings) == ("other", (64, 64, 64), [])

    del primus_plan["pretrain_plan"]["configuration_name"]
    configs["third"] = configs.pop("onemmiso")
    found = check_adaptation_plan(primus_plan, None)
    assert found.pretrain_patch_size is None
    assert "has 2 entries (other, third) and none is marked as the pre-training one" in found.errors[0]


def test_single_unnamed_configuration(primus_plan):
    """nnssl sometimes stores just the configuration used, not a name -> configuration map."""
    pretrain = primus_plan["pretrain_plan"]
    pretrain["configurations"] = pretrain["configurations"]["onemmiso"]
    found = check_adaptation_plan(primus_plan, None)
    assert found.errors == [] and found.pretrain_patch_size == (160, 160, 160)


def test_missing_fields_are_named():
    found = check_adaptation_plan({}, None)
    assert found.track is None
    assert found.errors == [
        "nnssl_adaptation_plan.architecture_plans is missing",
        "nnssl_adaptation_plan.pretrain_num_input_channels is missing, expected the integer 1",
        "nnssl_adaptation_plan.recommended_downstream_patchsize is missing (3 positive integers, normally 160 160 160)",
        "nnssl_adaptation_plan.pretrain_plan is missing",
    ]
    found = check_adaptation_plan({"architecture_plans": {"arch_class_name": "ResEncL"}}, None)
    assert "nnssl_adaptation_plan.key_to_encoder is missing, expected 'encoder.stages' for ResEncL" in found.errors


def test_descriptive_fields_missing_are_warnings(primus_plan):
    del primus_plan["pretrain_plan"]["dataset_name"]
    del primus_plan["pretrain_plan"]["configurations"]["onemmiso"]["spacing"]
    found = check_adaptation_plan(primus_plan, None)
    assert found.errors == []
    assert found.warnings == [
        "nnssl_adaptation_plan.pretrain_plan.dataset_name is missing",
        "nnssl_adaptation_plan.pretrain_plan.configurations['onemmiso'].spacing is missing (the challenge "
        "pre-trains at 1 mm isotropic)",
    ]


def test_requested_track_must_match_the_plan(primus_plan):
    found = check_adaptation_plan(primus_plan, "ResEncL")
    assert found.errors[0] == (
        "nnssl_adaptation_plan.architecture_plans.arch_class_name is 'PrimusM' but the "
        "submission was validated for track 'ResEncL'"
    )
    # ... and the keys are then checked against the requested track
    assert any("the ResEncL reference expects 'encoder.stages'" in e for e in found.errors)


def test_arch_kwargs_are_ignored_with_a_warning(primus_plan):
    primus_plan["architecture_plans"]["arch_kwargs"] = {"embed_dim": 1024}
    found = check_adaptation_plan(primus_plan, None)
    assert found.errors == [] and "arch_kwargs is set; it is ignored" in found.warnings[0]
