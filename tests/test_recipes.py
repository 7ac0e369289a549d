"""Recipes: the shipped values, their resolution with task overrides, the identity and run folder
they give a job, and the three network facts they stand on (nnU-Net's initialisation, Primus'
token geometry, the learning rate per epoch). No training."""

from __future__ import annotations

import math

import pytest
import torch
from einops import rearrange

from harness.finetune.job import FinetuneJob
from harness.recipes import (
    RECIPES,
    SSL3D_2025,
    SSL3D_2025_LOSSLESS,
    RecipeError,
    get_recipe,
)
from harness.tasks.registry import TaskSpecError, parse_task


# ----------------------------------------------------------------------------- the shipped values
def test_ssl3d_2025_segmentation_values():
    seg = SSL3D_2025.part("segmentation")
    assert seg.network_init == "nnunet" and seg.token_order == "as-is"
    assert seg.keep_planned_mask_for_norm and seg.keep_planned_transpose
    assert seg.reported_mean == "labels-of-case-nanmeans"
    r, p = seg.schedules["ResEncL"], seg.schedules["PrimusM"]
    assert (r.epochs, r.iterations_per_epoch, r.batch_size, r.warmup_epochs, r.poly_exponent) == (150, 250, 2, 15, 0.9)
    assert (r.optimizer, r.lr, r.from_scratch_lr, r.weight_decay, r.momentum, r.grad_clip) == (
        "sgd",
        1e-3,
        1e-2,
        3e-5,
        0.99,
        12.0,
    )
    assert (p.optimizer, p.lr, p.from_scratch_lr, p.weight_decay, p.betas, p.grad_clip) == (
        "adamw",
        1e-4,
        3e-4,
        5e-2,
        (0.9, 0.98),
        1.0,
    )
    assert (p.epochs, p.warmup_epochs) == (150, 15)


def test_ssl3d_2025_classification_values():
    cls = SSL3D_2025.part("classification")
    assert (cls.transformer_encoder, cls.token_order, cls.token_pooling) == (
        "eva-no-layerscale",
        "nnssl",
        "tokens-1..N",
    )
    assert (cls.resampling_order, cls.crop_centre, cls.zero_outside_mask, cls.normalization, cls.without_mask) == (
        3,
        "mask-centre-of-mass",
        True,
        "zscore-after-crop",
        "resize-to-patch",
    )
    assert (cls.split, cls.split_seed, cls.lr_stepping, cls.cuda_precision) == ("kfold", 12345, "epoch", "fp16")
    for track in ("ResEncL", "PrimusM"):
        s = cls.schedules[track]
        assert (s.epochs, s.batch_size, s.gradient_accumulation, s.lr, s.from_scratch_lr, s.weight_decay) == (
            200,
            2,
            48,
            1e-4,
            1e-4,
            1e-2,
        )
        assert (s.warmup_epochs, s.label_smoothing, s.dropout, s.grad_clip, s.iterations_per_epoch) == (
            20,
            0.0,
            0.2,
            None,
            None,
        )


def test_lossless_differs_only_where_pre_trained_information_is_lost():
    a, b = SSL3D_2025, SSL3D_2025_LOSSLESS
    assert set(a.parts) == set(b.parts) == {"segmentation", "classification"}
    seg_a, seg_b = a.part("segmentation").model_dump(), b.part("segmentation").model_dump()
    cls_a, cls_b = a.part("classification").model_dump(), b.part("classification").model_dump()
    assert {k for k, v in seg_a.items() if seg_b[k] != v} == {"token_order"} and seg_b["token_order"] == "nnssl"
    assert {k for k, v in cls_a.items() if cls_b[k] != v} == {"transformer_encoder", "token_pooling"}
    assert (cls_b["transformer_encoder"], cls_b["token_pooling"]) == ("primus-m", "all-tokens")
    assert len(b.differences) == 3 and not a.differences


def test_resencl_jobs_are_shared_between_the_recipes_and_primus_jobs_are_not():
    for kind in ("segmentation", "classification"):
        assert SSL3D_2025_LOSSLESS.setup_name(kind, "ResEncL") == "ssl3d-2025"
        assert SSL3D_2025_LOSSLESS.setup_name(kind, "PrimusM") == "ssl3d-2025-lossless"
        assert "primus_token_order" not in SSL3D_2025.applicable_values(kind, "ResEncL")
        assert "primus_token_order" in SSL3D_2025.applicable_values(kind, "PrimusM")


#: ``fingerprint(applicable_values)`` of every (recipe, task type, track) as recipe version 2 had
#: them before its transformer fields were renamed (``IDENTITY_NAMES``): the job ids of existing
#: runs are made of them, so these runs stay done.
IDENTITIES_OF_VERSION_2 = {
    ("ssl3d-2025", "segmentation", "ResEncL"): "42140b4e1ca12070",
    ("ssl3d-2025", "segmentation", "PrimusM"): "e8d445417ef334ef",
    ("ssl3d-2025", "classification", "ResEncL"): "c0ab7c9e7d154d30",
    ("ssl3d-2025", "classification", "PrimusM"): "a7eb5f857676963a",
    ("ssl3d-2025-lossless", "segmentation", "ResEncL"): "42140b4e1ca12070",
    ("ssl3d-2025-lossless", "segmentation", "PrimusM"): "54f1cad138df529a",
    ("ssl3d-2025-lossless", "classification", "ResEncL"): "c0ab7c9e7d154d30",
    ("ssl3d-2025-lossless", "classification", "PrimusM"): "5e2d953ef03328b6",
}


def test_renamed_recipe_fields_keep_the_identities_of_existing_runs():
    from harness.recipes import IDENTITY_NAMES, fingerprint

    for (name, kind, track), expected in IDENTITIES_OF_VERSION_2.items():
        recipe = RECIPES[name]
        assert recipe.version == 2 and fingerprint(recipe.applicable_values(kind, track)) == expected
    values = SSL3D_2025_LOSSLESS.applicable_values("classification", "PrimusM")
    assert {values[old] for old in IDENTITY_NAMES.values()} == {"nnssl", "primus-m", "all-tokens"}
    assert not set(IDENTITY_NAMES) & set(values)


def test_unknown_recipe_names_where_it_came_from():
    with pytest.raises(RecipeError, match=r"--recipe: unknown recipe 'ssl3d-2024' \(did you mean 'ssl3d-2025'\?\)"):
        get_recipe("ssl3d-2024")
    assert set(RECIPES) == {"ssl3d-2025", "ssl3d-2025-lossless"}


# ----------------------------------------------------------------------------- task overrides
def _seg_task(tmp_path, **extra):
    root = tmp_path / "ds"
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "dataset.json").write_text("{}")
    data = {"name": "T", "type": "segmentation", "dataset": str(root), **extra}
    return parse_task(data, tmp_path / "t.yaml")


def test_a_task_overrides_single_fields_on_top_of_the_recipe(tmp_path):
    task = _seg_task(tmp_path, schedule={"PrimusM": {"epochs": 3}})
    for recipe in RECIPES.values():
        s = task.schedule_for("PrimusM", recipe)
        assert s.epochs == 3 and s.optimizer == "adamw" and s.lr == 1e-4
        assert task.schedule_for("ResEncL", recipe) == recipe.part("segmentation").schedules["ResEncL"]


def test_an_override_the_recipe_fixes_is_an_error_naming_file_and_field(tmp_path):
    task = _seg_task(tmp_path, schedule={"ResEncL": {"optimizer": "adamw"}})
    with pytest.raises(RecipeError, match=r"t\.yaml: field 'schedule\.ResEncL\.optimizer': recipe ssl3d-2025 fixes it"):
        task.schedule_for("ResEncL")


def test_a_bad_override_fails_at_load_naming_file_and_field(tmp_path):
    with pytest.raises(TaskSpecError, match=r"t\.yaml: field 'schedule': ResEncL\.epochs: Input should be greater"):
        _seg_task(tmp_path, schedule={"ResEncL": {"epochs": 0}})
    with pytest.raises(TaskSpecError, match=r"ResEncL\.epoch: Extra inputs are not permitted"):
        _seg_task(tmp_path, schedule={"ResEncL": {"epoch": 3}})


def test_job_identity_and_run_folder_follow_the_recipe(tmp_path):
    task = _seg_task(tmp_path)

    def job(track, recipe):
        return FinetuneJob(task=task, fold=0, track=track, results=tmp_path, recipe=recipe)

    a, b = job("PrimusM", SSL3D_2025), job("PrimusM", SSL3D_2025_LOSSLESS)
    assert a.run.path != b.run.path and a.job_id() != b.job_id()
    assert a.run.path.parent.name == "ssl3d-2025" and b.run.path.parent.name == "ssl3d-2025-lossless"
    assert a.description()["recipe_values"]["primus_token_order"] == "as-is"
    c, d = job("ResEncL", SSL3D_2025), job("ResEncL", SSL3D_2025_LOSSLESS)
    assert c.run.path == d.run.path and c.job_id() == d.job_id()
    assert "primus_token_order" not in c.description()["recipe_values"]
    assert c.description()["recipe"] == "ssl3d-2025" and c.description()["recipe_version"] == 2
    assert c.run.results_root == tmp_path


# ----------------------------------------------------------------------------- learning rate per epoch
@pytest.mark.parametrize("track", ["ResEncL", "PrimusM"])
@pytest.mark.parametrize("pretrained", [True, False])
def test_segmentation_lr_per_epoch_and_optimizer(track, pretrained):
    """The organizers' Lin_incr_LRScheduler (lr/W * (e+1)) then PolyLRScheduler_offset."""
    from harness.finetune.nnunet_trainer import SSL3DFinetuneTrainer

    schedule = SSL3D_2025.part("segmentation").schedules[track]
    trainer = SSL3DFinetuneTrainer.__new__(SSL3DFinetuneTrainer)  # no plans needed for the optimizer
    trainer.schedule = schedule
    trainer.initial_lr = schedule.lr if pretrained else schedule.from_scratch_lr
    trainer.num_epochs = schedule.epochs
    trainer.network = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.LayerNorm(2))
    optimizer, scheduler = trainer.configure_optimizers()
    lr = {("ResEncL", True): 1e-3, ("ResEncL", False): 1e-2, ("PrimusM", True): 1e-4, ("PrimusM", False): 3e-4}[
        track, pretrained
    ]
    assert len(optimizer.param_groups) == 1 and len(optimizer.param_groups[0]["params"]) == 4
    group = optimizer.param_groups[0]
    if track == "ResEncL":
        assert isinstance(optimizer, torch.optim.SGD) and group["nesterov"] and group["momentum"] == 0.99
        assert group["weight_decay"] == 3e-5 and schedule.grad_clip == 12.0
    else:
        assert isinstance(optimizer, torch.optim.AdamW) and group["betas"] == (0.9, 0.98)
        assert group["weight_decay"] == 5e-2 and schedule.grad_clip == 1.0
    for epoch in range(150):
        expected = lr / 15 * (epoch + 1) if epoch < 15 else lr * (1 - (epoch - 15) / 135) ** 0.9
        assert scheduler.lr_at(epoch) == pytest.approx(expected, rel=1e-12)
    assert scheduler.lr_at(0) == pytest.approx(lr / 15) and scheduler.lr_at(14) == pytest.approx(lr)


# ----------------------------------------------------------------------------- initialisation
def test_resencl_initialisation_equals_nnunets_own_construction_path():
    """nnunetv2's get_network_from_plans(allow_init=True) with the ResEnc-L architecture: same
    seed, same tensors; and the statistics nnU-Net's init stands for (He std, zeroed norms)."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    from harness.models import build_network

    kwargs = dict(
        n_stages=6,
        features_per_stage=[32, 64, 128, 256, 320, 320],
        conv_op="torch.nn.modules.conv.Conv3d",
        kernel_sizes=[[3, 3, 3]] * 6,
        strides=[[1, 1, 1]] + [[2, 2, 2]] * 5,
        n_blocks_per_stage=[1, 3, 4, 6, 6, 6],
        n_conv_per_stage_decoder=[1, 1, 1, 1, 1],
        conv_bias=True,
        norm_op="torch.nn.modules.instancenorm.InstanceNorm3d",
        norm_op_kwargs={"eps": 1e-5, "affine": True},
        dropout_op=None,
        dropout_op_kwargs=None,
        nonlin="torch.nn.LeakyReLU",
        nonlin_kwargs={"inplace": True},
    )
    torch.manual_seed(0)
    ours = build_network("ResEncL", input_channels=1, num_classes=3)
    torch.manual_seed(0)
    theirs = get_network_from_plans(
        "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet",
        kwargs,
        ["conv_op", "norm_op", "dropout_op", "nonlin"],
        1,
        3,
        allow_init=True,
        deep_supervision=False,
    )
    a, b = ours.state_dict(), theirs.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    torch.manual_seed(0)
    uninitialised = build_network("ResEncL", input_channels=1, num_classes=3, initialize=False)
    key = "encoder.stages.1.blocks.0.conv1.conv.weight"
    assert not torch.equal(uninitialised.state_dict()[key], a[key])
    for name, module in ours.named_modules():
        if isinstance(module, torch.nn.Conv3d):
            fan_in = module.weight[0].numel()
            expected = math.sqrt(2 / ((1 + 0.01**2) * fan_in))
            assert module.weight.std().item() == pytest.approx(expected, rel=0.15), name
    # the last norm of every residual block (1+3+4+6+6+6 = 26) is zeroed, and nothing else
    last_norms = {k for k in a if k.startswith("encoder.stages.") and k.endswith(".conv2.norm.weight")}
    assert len(last_norms) == 26 and all(torch.count_nonzero(a[k]) == 0 for k in last_norms)
    zero_norms = {
        k
        for k, v in a.items()
        if k.startswith("encoder.") and k.endswith("norm.weight") and torch.count_nonzero(v) == 0
    }
    assert zero_norms == last_norms


# ----------------------------------------------------------------------------- Primus token geometry
def _nnssl_encoder(weights: dict, patch, input_channels: int = 1):
    """An encoder that computes what nnssl's EvaMAE encoder computes (evaMAE_module.py): its patch
    embedding, its Eva (PrimusM flags, RoPE on) and its flattening 'b c w h d -> b (h w d) c'."""
    from dynamic_network_architectures.building_blocks.eva import Eva
    from dynamic_network_architectures.building_blocks.patch_encode_decode import PatchEmbed

    down = PatchEmbed((8, 8, 8), input_channels, 864)
    grid = tuple(p // 8 for p in patch)
    eva = Eva(embed_dim=864, depth=16, num_heads=12, ref_feat_shape=grid, init_values=0.1, scale_attn_inner=True)
    down.load_state_dict(
        {k.removeprefix("down_projection."): v for k, v in weights.items() if k.startswith("down_projection.")}
    )
    eva.load_state_dict({k.removeprefix("eva."): v for k, v in weights.items() if k.startswith("eva.")})

    def features(x):  # (B, C, W, H, D) token features, nnssl's sequence folded back to the grid
        z = down(x)
        w, h, d = z.shape[2:]
        tokens, _ = eva(rearrange(z, "b c w h d -> b (h w d) c"))
        return rearrange(tokens, "b (h w d) c -> b c w h d", w=w, h=h, d=d)

    return features


def _finetune_features(weights: dict, patch, token_order: str):
    from harness.models import build_network, load_pretrained_encoder
    from harness.models.primus import from_tokens

    net = build_network("PrimusM", input_channels=1, num_classes=2, patch_size=patch, token_order=token_order)
    load_pretrained_encoder(
        net, weights, "PrimusM", pretrain_patch_size=patch, target_patch_size=patch, token_order=token_order
    )
    assert net.eva.rope is not None  # RoPE on
    captured = {}
    net.eva.register_forward_hook(lambda m, i, o: captured.update(tokens=o[0]))

    def features(x):
        out = net(x)
        assert out.shape == (x.shape[0], 2, *x.shape[2:])  # the output stays in the input's orientation
        return from_tokens(captured["tokens"], tuple(p // 8 for p in x.shape[2:]), token_order)

    return features


def test_nnssl_token_order_computes_nnssls_encoder_and_as_is_does_not(tmp_path):
    from harness.submission import load_submission
    from harness.submission.example import write_example_submission

    patch = (32, 48, 64)  # a non-square grid (4, 6, 8): a transposition cannot hide
    path = write_example_submission(tmp_path / "sub.pth", "PrimusM", seed=3, pretrain_patch=patch)
    sub = load_submission(path)  # a checkpoint in nnssl's layout, read as intake reads it
    weights = {k: v.float() for k, v in sub.weights.items()}
    # a pre-trained pos_embed is not near zero: make it matter as it does in a real checkpoint
    weights["eva.pos_embed"] = torch.randn_like(weights["eva.pos_embed"])
    x = torch.randn(2, 1, *patch, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = _nnssl_encoder(weights, patch)(x)
        exact = _finetune_features(weights, patch, "nnssl")(x)
        as_is = _finetune_features(weights, patch, "as-is")(x)

    def rel(a):
        return ((a - reference).norm() / reference.norm()).item()

    assert rel(exact) <= 1e-5
    assert rel(as_is) > 1e-2
