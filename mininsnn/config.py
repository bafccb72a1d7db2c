"""Run configurations: every setting declared once, the paper's configurations, one validator.

A run configuration is a flat dict: the name of a configuration (``"config"``) and one value per
setting below. :data:`SETTINGS` is the only place that says what a setting means, what values it
takes, its default and its command-line flag; the CLI builds ``mininsnn train``'s flags from it,
and :func:`validate_config` checks a configuration against it. So adding a hyperparameter
touches two places: its :class:`Setting` line here, and the code that uses it (the network
builder, ``mininsnn.models.reference_network``, takes every ``model`` setting by name). Runs
recorded before a setting existed read as the named configuration's value, or as the setting's
``legacy`` value where today's default differs from what they used.

:data:`CONFIGS` holds the paper's configurations (docs/semantics.md, "Configurations") as the
values that differ from the defaults, plus mininsnn's better recipe (the ``*-plus`` configs).

    >>> cfg = make_config("mnist-4bit", epochs=3, lr=1e-3)   # validated; unknown keys refused
    >>> cfg["quant_grad"], cfg["num_steps"]
    ('ste+scale', 100)

The value checks are the rules of :mod:`mininsnn.rules`; this module imports nothing that
needs Numba.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Callable

from mininsnn import rules

__all__ = ["ConfigError", "Setting", "SETTINGS", "DEFAULTS", "BN_EPS", "CONFIGS", "DATASETS", "ARCHITECTURES", "RESUMABLE_KEYS",
           "BRANCHABLE_KEYS", "make_config", "validate_config", "check_same_config",
           "model_settings", "test_steps"]


class ConfigError(ValueError):
    """A run configuration or run folder that cannot be used (bad value, unknown key, mismatch)."""


# ---------------------------------------------------------------------------------------------
# value checks: the rules of mininsnn.rules (each returns the normalised value or raises
# ValueError("must be ..., got ...")), plus the few that only a run configuration has

def _lazy_choice(module, table):
    """A choice among the keys of ``module.table``, imported when first needed (that module owns
    the names: the losses and the schedules, on the training floor above this table)."""
    def choices():
        import importlib      # a floor above this one, so only when a value is checked
        return tuple(getattr(importlib.import_module(module), table))

    def check(v):
        return rules.choice(*choices())(v)
    check.choices = choices
    return check


def _betas(v):
    if (not isinstance(v, (list, tuple)) or len(v) != 2
            or not all(isinstance(b, (int, float)) and not isinstance(b, bool)
                       and 0.0 <= b < 1.0 for b in v)):
        raise ValueError(f"must be two numbers in [0, 1), got {v!r}")
    return tuple(float(b) for b in v)


def _spec_data(v):
    """A network spec as plain JSON data (mininsnn.spec checks its layers), or None."""
    if v is None:
        return None
    if not isinstance(v, dict) or not isinstance(v.get("layers"), list):
        raise ValueError(f"must be a network spec (with 'layers') or None, got {v!r:.60}")
    return json.loads(json.dumps(v))


# ---------------------------------------------------------------------------------------------
# the settings

@dataclass(frozen=True)
class Setting:
    """One setting of a run configuration.

    key: the configuration key (and the keyword of the code that uses it);
    default: its value unless a configuration or the user sets another;
    check: value -> normalised value, or ValueError saying what it must be;
    help: one line for ``--help`` (None: not a command-line flag);
    model: True for settings of the network itself (passed to models.reference_network);
    legacy: what a run recorded before this setting existed used, when that is not the named
        configuration's value today (its configuration then lacks the key; see validate_config).
    """

    key: str
    default: Any
    check: Callable[[Any], Any]
    help: str | None
    model: bool = False
    legacy: Any = None
    has_legacy: bool = False

    @property
    def flag(self) -> str:
        return "--" + self.key.lower().replace("_", "-")


#: dataset -> (input shape, conv1 channels, conv2 channels, number of classes) of its network
ARCHITECTURES = {
    "mnist": ((1, 28, 28), 16, 64, 10),
    "fashion-mnist": ((1, 28, 28), 16, 64, 10),
    "dvsgesture": ((2, 32, 32), 16, 32, 11),
}
DATASETS = tuple(ARCHITECTURES)

SETTINGS = (
    # -- the network (mininsnn.models.reference_network takes these by name) --
    Setting("dataset", None, rules.choice(*DATASETS), None),
    Setting("model", None, _spec_data, "the network: a spec JSON file (docs/spec.md) or a "
            "built-in spec (qsnn-mnist, qsnn-dvs); the run records the spec itself. Default: "
            "the configuration's paper network"),
    Setting("bits", 4, rules.BITS, "weight bits 2..16, or 'none' for full precision", model=True),
    Setting("quant_grad", "ste+scale", rules.QUANT_GRAD,
            "quantizer backward: 'ste+scale' (the paper's code: straight-through plus the gradient "
            "through the scale max|W|/L) or plain 'ste'", model=True,
            legacy="ste", has_legacy=True),     # the default until ste+scale replaced it
    Setting("beta", 0.9, rules.BETA, "membrane leak beta of every LIF layer", model=True),
    Setting("threshold", 1.0, rules.THRESHOLD, "firing threshold theta", model=True),
    Setting("reset", "subtract", rules.RESET,
            "LIF reset: 'subtract' theta (the paper's) or to 'zero'", model=True),
    Setting("reset_delay", True, rules.FLAG,
            "LIF reset one step after the spike (the paper's); --no-reset-delay resets in the "
            "step that fires, the neuron NIR's LIF assumes (with --reset zero)", model=True),
    Setting("surrogate", "fast_sigmoid", rules.SURROGATE,
            "surrogate gradient of the spike", model=True),
    Setting("slope", 25.0, rules.SLOPE, "surrogate slope (atan: alpha)",
            model=True),
    Setting("dropout", 0.0, rules.DROPOUT,
            "dropout probability on the output layer's input", model=True),
    Setting("batchnorm", True, rules.boolean, "BatchNorm after each conv + pool", model=True),
    Setting("sparse_grad", None, rules.SPARSE_GRAD,
            "sparse backward: the surrogate gradient is 0 where |U - threshold| > B (Perez-Nieves "
            "& Goodman 2021; faster, approximate; delayed reset only); default: exact",
            model=True),
    Setting("dtype", "float32", rules.choice("float32", "float64"),
            "float type of weights and activations (float64 for exact checks; float32 is "
            "about twice as fast)", model=True),
    # -- time steps --
    Setting("num_steps", 100, rules.integer(1), "time steps T of a training sample (static images "
            "are fed at every step; event frames are binned to T steps)"),
    Setting("test_num_steps", None, rules.integer(1, optional=True),
            "time steps of a test sample (default: num_steps; DVS128 Gesture: 600)"),
    # -- the loss --
    Setting("loss", "mse_count", _lazy_choice("mininsnn.loss", "LOSSES"),
            "loss on the output spikes (see mininsnn.loss)"),
    Setting("correct_rate", 0.8, rules.number(0, 1),
            "mse_count: target firing rate of the true class"),
    Setting("incorrect_rate", 0.2, rules.number(0, 1),
            "mse_count: target firing rate of the other classes"),
    # -- the optimiser and the schedule --
    Setting("lr", 1e-3, rules.number(0, lo_open=True), "initial learning rate"),
    Setting("betas", (0.9, 0.999), _betas, None),
    Setting("weight_decay", 0.0, rules.number(0), "Adam L2 penalty (PyTorch Adam, not AdamW)"),
    Setting("schedule", "cosine", _lazy_choice("mininsnn.schedule", "SCHEDULES"),
            "learning-rate schedule, stepped every batch"),
    Setting("T_max", 4690, rules.integer(1),
            "cosine: half period in batches; warm_restarts: first cycle T_0"),
    Setting("T_mult", 1, rules.integer(1), "warm_restarts: cycle i lasts T_max * T_mult**i batches"),
    Setting("eta_min", 0.0, rules.number(0), "lowest lr of the cosine schedules"),
    Setting("grad_clip", False, rules.boolean, "clip the global gradient norm to 1"),
    Setting("weight_clip", False, rules.boolean, "clamp every parameter to [-1, 1] before the step"),
    # -- the run --
    Setting("epochs", 1, rules.integer(1), "total number of epochs of the run"),
    Setting("batch_size", 128, rules.integer(1), "samples per batch"),
    Setting("seed", 0, rules.integer(0), "seed of the weights, dropout masks and batch order"),
    Setting("subset", None, rules.integer(1, optional=True), "train on the first N training samples"),
    Setting("validation", None, rules.integer(1, optional=True),
            "hold out the last N samples of the training set (before --subset takes the first "
            "ones) as a validation set, scored every epoch (valid_loss, valid_acc); best.h5 is "
            "then the epoch of best validation accuracy"),
    Setting("test_subset", None, rules.integer(1, optional=True),
            "evaluate on the first N test samples"),
)

#: key -> default of every setting, read-only: what a constructor or a converter takes when it is
#: not told (mininsnn.models.reference_network, the layers, mininsnn.surrogate, deploy, NIR).
DEFAULTS = MappingProxyType({s.key: s.default for s in SETTINGS})

#: The eps of BatchNorm2d (PyTorch's): not a run setting, and not in a state dict, so the layer,
#: the integer converter and the NIR reader take it from here.
BN_EPS = 1e-5

# The paper's configurations (docs/semantics.md): only what differs from the defaults above.
_MNIST = dict(dataset="mnist", bits=4, beta=0.994, threshold=2.915, slope=13.84, lr=5.4e-3,
              dropout=0.003168)
_FMNIST = dict(dataset="fashion-mnist", bits=4, beta=0.974, threshold=2.473, slope=5.5565,
               lr=2.908e-3, dropout=0.073556)
# mininsnn's recipe on top of the paper's: the wrong classes asked for no spikes instead of 20 %
# of the steps, and one cosine over the whole 20-epoch run (RESULTS.md: 4-bit MNIST 99.44 %,
# Fashion-MNIST 91.11 % best test accuracy, mean of three seeds).
_PLUS = dict(incorrect_rate=0.0, T_max=9380, epochs=20)
CONFIGS = {
    "mnist-4bit": _MNIST,
    "fmnist-4bit": _FMNIST,
    "mnist-4bit-plus": {**_MNIST, **_PLUS},
    "fmnist-4bit-plus": {**_FMNIST, **_PLUS},
    "dvs-4bit": dict(dataset="dvsgesture", bits=4, beta=0.614, threshold=0.427, slope=4.413,
                     lr=2.634e-3, dropout=0.203, batchnorm=False, grad_clip=True,
                     weight_clip=True, T_max=735, batch_size=16, test_num_steps=600),
    "mnist-fp": dict(dataset="mnist", bits=None, beta=0.921, threshold=2.04, slope=6.03,
                     lr=1.9e-3, dropout=0.094, grad_clip=True, weight_clip=True),
    "fmnist-fp": dict(dataset="fashion-mnist", bits=None, beta=0.39, threshold=1.47, slope=7.66,
                      lr=2e-3, dropout=0.13, grad_clip=True, weight_clip=True),
    "dvs-fp": dict(dataset="dvsgesture", bits=None, beta=0.93, threshold=1.47, slope=9.70,
                   lr=2.4e-3, dropout=0.29, grad_clip=True, weight_clip=True, T_max=735,
                   batch_size=16, test_num_steps=600),
}

# The only settings a resumed run may change.
RESUMABLE_KEYS = ("epochs",)
# The settings a branch (a new run continuing another run's checkpoint) may change: the schedule,
# provided it gave the same lr at every batch already trained (mininsnn.train.replay_schedule).
BRANCHABLE_KEYS = ("epochs", "schedule", "T_max", "T_mult", "eta_min")


def _defaults(name: str) -> dict:
    if name not in CONFIGS:
        raise ConfigError(f"unknown config {name!r}; choose one of {', '.join(CONFIGS)}")
    return {"config": name, **{s.key: s.default for s in SETTINGS}, **CONFIGS[name]}


def make_config(name: str, **overrides) -> dict:
    """Configuration ``name`` with ``overrides`` applied, validated (ConfigError otherwise)."""
    cfg = _defaults(name)
    unknown = [k for k in overrides if k not in cfg]
    if unknown:
        raise ConfigError(f"unknown config key {unknown[0]!r}; known keys: {', '.join(cfg)}")
    return validate_config({**cfg, **overrides})


def validate_config(cfg: dict) -> dict:
    """Check every value of a run configuration; returns a normalised copy or raises ConfigError.

    The one place where settings are checked: mininsnn.cli, the trainer, branches and resumes
    all come through here."""
    if not isinstance(cfg, dict):
        raise ConfigError(f"a run configuration must be a dict, got {type(cfg).__name__}")
    base = _defaults(cfg.get("config"))
    unknown = [k for k in cfg if k not in base]
    if unknown:
        raise ConfigError(f"unknown config key {unknown[0]!r}; known keys: {', '.join(base)}")
    # A key that is missing belongs to a setting added after the run was recorded: the run used
    # what the named configuration gives today, or the setting's recorded legacy value.
    cfg = {"config": base["config"],
           **{s.key: s.legacy if s.has_legacy else base[s.key] for s in SETTINGS}, **cfg}
    for s in SETTINGS:
        try:
            cfg[s.key] = s.check(cfg[s.key])
        except ValueError as e:
            raise ConfigError(f"{s.key} {e}") from None
    if cfg["sparse_grad"] is not None and not cfg["reset_delay"]:
        raise ConfigError("sparse_grad needs the delayed reset (reset_delay true)")
    if cfg["correct_rate"] <= cfg["incorrect_rate"]:
        raise ConfigError(f"correct_rate ({cfg['correct_rate']}) must exceed incorrect_rate "
                          f"({cfg['incorrect_rate']})")
    return cfg


def check_same_config(saved: dict, wanted: dict, where: str,
                      allowed: tuple = RESUMABLE_KEYS) -> None:
    """ConfigError naming the first key (other than ``allowed``) whose value differs."""
    for k in (k for k in {**saved, **wanted} if k not in allowed):
        if saved.get(k, "<absent>") != wanted.get(k, "<absent>"):
            raise ConfigError(f"{where} was trained with {k}={saved.get(k, '<absent>')!r}, not "
                              f"{wanted.get(k, '<absent>')!r}; drop that option to resume it, or "
                              "start a new run with another --out")


def model_settings(cfg: dict) -> dict:
    """The settings of ``cfg`` that describe the network (keywords of reference_network)."""
    return {s.key: cfg[s.key] for s in SETTINGS if s.model}


def test_steps(cfg: dict) -> int:
    """Time steps of a test sample: test_num_steps, or num_steps when that is None."""
    return cfg["num_steps"] if cfg["test_num_steps"] is None else cfg["test_num_steps"]


test_steps.__test__ = False   # not a pytest test, despite its name
