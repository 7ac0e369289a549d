"""Checking ``nnssl_adaptation_plan`` (shared/reference/SSL3D.md section 1) against a track.

nnssl writes the plan as nested dicts whose sequences are often tuples; both tuples and lists are
accepted everywhere. Fields the harness needs are errors when missing or mistyped; descriptive
fields it does not use (dataset and plans names, spacing ...) are type-checked when present and
only warned about when absent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from harness.tracks import TRACKS, get_track

PLAN_KEY = "nnssl_adaptation_plan"
#: The pre-training configuration of the challenge (1 mm isotropic); chosen when several exist.
CHALLENGE_CONFIGURATION = "onemmiso"
#: Keys under which a plan may name its own pre-training configuration.
_CONFIGURATION_NAME_KEYS = ("configuration_name", "configuration")


@dataclass
class PlanFindings:
    """What the plan says and what is wrong with it. ``track`` is the challenge track the plan
    names (None when it names none); ``pretrain_patch_size`` is None when it cannot be read."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    track: str | None = None
    pretrain_patch_size: tuple[int, int, int] | None = None
    configuration: str | None = None


def check_adaptation_plan(plan: Mapping[str, Any], track: str | None) -> PlanFindings:
    """Check every field of the plan. ``track`` is the track to check the keys against (the one
    requested by the caller, else the plan's own ``arch_class_name`` when it names a track)."""

    out = PlanFindings()
    err, warn = out.errors.append, out.warnings.append

    arch = plan.get("architecture_plans")
    if arch is None:
        err(f"{PLAN_KEY}.architecture_plans is missing")
    elif not isinstance(arch, Mapping):
        err(f"{PLAN_KEY}.architecture_plans is a {_kind(arch)}, expected a dict")
    else:
        name = arch.get("arch_class_name")
        if not isinstance(name, str):
            err(
                f"{PLAN_KEY}.architecture_plans.arch_class_name is {_missing_or_kind(arch, 'arch_class_name')}, "
                f"expected one of the challenge tracks: {', '.join(TRACKS)}"
            )
        elif name not in TRACKS:
            err(
                f"{PLAN_KEY}.architecture_plans.arch_class_name is {name!r}, not a challenge track; "
                f"accepted tracks: {', '.join(TRACKS)}"
            )
        else:
            out.track = name
        kwargs = arch.get("arch_kwargs")
        if kwargs is not None and not isinstance(kwargs, Mapping):
            err(f"{PLAN_KEY}.architecture_plans.arch_kwargs is a {_kind(kwargs)}, expected null or a dict")
        elif kwargs:
            warn(
                f"{PLAN_KEY}.architecture_plans.arch_kwargs is set; it is ignored: the track's "
                "reference architecture is always used"
            )

    if track is not None and out.track is not None and out.track != track:
        err(
            f"{PLAN_KEY}.architecture_plans.arch_class_name is {out.track!r} but the submission was "
            f"validated for track {track!r}"
        )
    track = track or out.track

    channels = plan.get("pretrain_num_input_channels")
    if not _is_int(channels):
        err(
            f"{PLAN_KEY}.pretrain_num_input_channels is {_missing_or_kind(plan, 'pretrain_num_input_channels')}, "
            "expected the integer 1"
        )
    elif channels != 1:
        err(f"{PLAN_KEY}.pretrain_num_input_channels is {channels}; the challenge pre-trains on 1 channel")

    if "recommended_downstream_patchsize" not in plan:
        err(f"{PLAN_KEY}.recommended_downstream_patchsize is missing (3 positive integers, normally 160 160 160)")
    else:
        problem = _triplet_problem(plan["recommended_downstream_patchsize"], integer=True)
        if problem:
            err(f"{PLAN_KEY}.recommended_downstream_patchsize {problem}")

    _check_pretrain_plan(plan.get("pretrain_plan"), plan, out)
    if track is not None:
        _check_keys(plan, get_track(track), out)

    if out.pretrain_patch_size is not None and track is not None:
        spec = get_track(track)
        if spec.patch_embed_size is not None and any(
            p % e for p, e in zip(out.pretrain_patch_size, spec.patch_embed_size)
        ):
            err(
                f"pre-training patch size {out.pretrain_patch_size} (pretrain_plan.configurations"
                f"[{out.configuration!r}].patch_size) is not divisible by the {track} patch embedding "
                f"{spec.patch_embed_size}"
            )
            out.pretrain_patch_size = None
    return out


def _check_pretrain_plan(pretrain: Any, plan: Mapping[str, Any], out: PlanFindings) -> None:
    err, warn = out.errors.append, out.warnings.append
    where = f"{PLAN_KEY}.pretrain_plan"
    if pretrain is None:
        err(f"{where} is missing")
        return
    if not isinstance(pretrain, Mapping):
        err(f"{where} is a {_kind(pretrain)}, expected a dict")
        return
    for key in ("dataset_name", "plans_name"):
        if key not in pretrain:
            warn(f"{where}.{key} is missing")
        elif not isinstance(pretrain[key], str):
            err(f"{where}.{key} is a {_kind(pretrain[key])}, expected a string")

    configurations = pretrain.get("configurations")
    if not isinstance(configurations, Mapping) or not configurations:
        err(
            f"{where}.configurations is {_missing_or_kind(pretrain, 'configurations')}, expected a "
            "non-empty dict of configuration name -> {patch_size, spacing, ...}"
        )
        return
    if "patch_size" in configurations:  # nnssl sometimes stores the one configuration used, unnamed
        name, config = None, configurations
        config_where = f"{where}.configurations"
    else:
        name = _choose_configuration(pretrain, configurations, out)
        if name is None:
            return
        config = configurations[name]
        config_where = f"{where}.configurations[{name!r}]"
        if not isinstance(config, Mapping):
            err(f"{config_where} is a {_kind(config)}, expected a dict")
            return
    out.configuration = name

    if "patch_size" not in config:
        err(f"{config_where}.patch_size is missing: the pre-training patch size cannot be read")
    else:
        problem = _triplet_problem(config["patch_size"], integer=True)
        if problem:
            err(f"{config_where}.patch_size {problem}")
        else:
            size = tuple(int(p) for p in config["patch_size"])
            assert len(size) == 3  # _triplet_problem checked it
            out.pretrain_patch_size = size
    if "spacing" not in config:
        warn(f"{config_where}.spacing is missing (the challenge pre-trains at 1 mm isotropic)")
    else:
        problem = _triplet_problem(config["spacing"], integer=False)
        if problem:
            err(f"{config_where}.spacing {problem}")
    schemes = config.get("normalization_schemes")
    if schemes is not None and not (_is_sequence(schemes) and all(isinstance(s, str) for s in schemes)):
        err(f"{config_where}.normalization_schemes is a {_kind(schemes)}, expected a list of strings")
    style = config.get("spacing_style")
    if style is not None and not isinstance(style, str):
        err(f"{config_where}.spacing_style is a {_kind(style)}, expected a string")


def _choose_configuration(
    pretrain: Mapping[str, Any], configurations: Mapping[str, Any], out: PlanFindings
) -> str | None:
    """The only configuration, else the one the plan names, else the challenge's ``onemmiso``."""
    names = [str(n) for n in configurations]
    if len(names) == 1:
        return next(iter(configurations))
    for key in _CONFIGURATION_NAME_KEYS:
        named = pretrain.get(key)
        if isinstance(named, str) and named in configurations:
            return named
    if CHALLENGE_CONFIGURATION in configurations:
        out.warnings.append(
            f"{PLAN_KEY}.pretrain_plan.configurations has {len(names)} entries ({', '.join(names)}); "
            f"reading the pre-training patch size from {CHALLENGE_CONFIGURATION!r}, the challenge's"
        )
        return CHALLENGE_CONFIGURATION
    out.errors.append(
        f"{PLAN_KEY}.pretrain_plan.configurations has {len(names)} entries ({', '.join(names)}) and "
        "none is marked as the pre-training one; cannot read the pre-training patch size"
    )
    return None


def _check_keys(plan: Mapping[str, Any], spec, out: PlanFindings) -> None:
    err, warn = out.errors.append, out.warnings.append
    for field_name, expected in (("key_to_encoder", spec.key_to_encoder), ("key_to_stem", spec.key_to_stem)):
        value = plan.get(field_name)
        if not isinstance(value, str):
            err(
                f"{PLAN_KEY}.{field_name} is {_missing_or_kind(plan, field_name)}, expected {expected!r} "
                f"for {spec.name}"
            )
        elif value != expected:
            err(f"{PLAN_KEY}.{field_name} is {value!r}; the {spec.name} reference expects {expected!r}")

    in_proj_field = "keys_to_in_proj"
    if in_proj_field not in plan and "key_to_in_proj" in plan:
        in_proj_field = "key_to_in_proj"  # the spelling some nnssl versions wrote
        warn(f"{PLAN_KEY} names its in-projection keys 'key_to_in_proj' instead of 'keys_to_in_proj'")
    in_proj = plan.get(in_proj_field)
    expected_in_proj = tuple(spec.keys_to_in_proj)
    if not (_is_sequence(in_proj) and in_proj and all(isinstance(k, str) for k in in_proj)):
        err(
            f"{PLAN_KEY}.keys_to_in_proj is {_missing_or_kind(plan, in_proj_field)}, expected the list "
            f"{list(expected_in_proj)} for {spec.name}"
        )
    elif set(in_proj) != set(expected_in_proj):
        err(
            f"{PLAN_KEY}.keys_to_in_proj is {list(in_proj)}; the {spec.name} reference expects {list(expected_in_proj)}"
        )

    lpe = plan.get("key_to_lpe")
    if lpe is None:
        if spec.key_to_lpe is not None:
            warn(
                f"{PLAN_KEY}.key_to_lpe is {'null' if 'key_to_lpe' in plan else 'missing'}; "
                f"using {spec.key_to_lpe!r}, the {spec.name} positional embedding"
            )
    elif not isinstance(lpe, str):
        err(f"{PLAN_KEY}.key_to_lpe is a {_kind(lpe)}, expected a string or null")
    elif lpe != spec.key_to_lpe:
        expected = repr(spec.key_to_lpe) if spec.key_to_lpe else "null (no learned positional embedding)"
        err(f"{PLAN_KEY}.key_to_lpe is {lpe!r}; the {spec.name} reference expects {expected}")


def _triplet_problem(value: Any, *, integer: bool) -> str | None:
    """None when ``value`` is 3 positive numbers (integers when ``integer``), else what is wrong."""
    what = "3 positive integers" if integer else "3 positive numbers"
    if not _is_sequence(value):
        return f"is a {_kind(value)}, expected {what}"
    if len(value) != 3:
        return f"has {len(value)} entries {list(value)}, expected {what}"
    for v in value:
        number_ok = _is_int(v) or (isinstance(v, float) and (v.is_integer() or not integer))
        if not number_ok or v <= 0:
            return f"is {list(value)}, expected {what}"
    return None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_sequence(value: Any) -> bool:
    return isinstance(value, (list, tuple))


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _missing_or_kind(mapping: Mapping[str, Any], key: str) -> str:
    if key not in mapping:
        return "missing"
    value = mapping[key]
    return "null" if value is None else f"a {type(value).__name__} ({value!r:.60})"
