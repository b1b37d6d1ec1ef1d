"""Named attacks with their literature defaults: one row of :data:`ATTACKS` per attack.

:func:`build_attack` turns a name and options into an attack object; ``reconguard attack``,
``defend``, ``transfer`` and the audit all build their attacks here, so an attack and its defaults
are defined once. Adding an attack means adding a row. :data:`OPTIONS` is the one table of the
options an attack can take -- type, range, default and help: the command-line flags of
``reconguard attack/defend/transfer`` and the checks of an audit config's ``attacks:`` entries are
generated from it, so a new option is a row here plus its use in the attack.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Callable

from reconguard.attacks import FNAF, PGD, AttackLoss, SparseKSpace, ThreatModel, fgsm
from reconguard.attacks.fnaf import CRITERIA
from reconguard.attacks.threat import MAX_EPS
from reconguard.errors import ConfigError


@dataclass(frozen=True)
class Option:
    """One option an attack can take.

    Attributes:
        kind: ``int``, ``float``, ``bool`` or ``str``.
        default: The value when not given (``None``: the attack's preset default).
        low, strict, high: Range of a number: ``>= low`` (``> low`` when ``strict``), ``<= high``.
        help: One line for ``--help`` (the default is appended).
        metavar: How ``--help`` shows the value.
        choices: The values a ``str`` option may take (``None``: checked by the attack).
        off: For a ``bool`` that defaults to ``True``: the flag that sets it ``False``, and its help.
    """

    kind: type
    default: Any = None
    low: float = 0.0
    strict: bool = False
    high: float | None = None
    help: str = ""
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    off: tuple[str, str] | None = None


#: Every option an attack can take (``seed`` and ``eps`` come from an audit's ``seeds`` and ``eps``).
OPTIONS: dict[str, Option] = {
    "eps": Option(float, help="budget; for sparse-kspace the number of spikes (<= 1e6, checked by the threat)"),
    "norm": Option(str, metavar="l2|linf", help="budget norm"),
    "relative": Option(bool, True, help="eps relative to the measurement (see the attacks below)",
                       off=("--absolute", "eps in raw data units")),
    "amplitude": Option(float, 1.0, strict=True, high=MAX_EPS, help="sparse-kspace: spike modulus / max|y|"),
    "steps": Option(int, low=1, help="iterations"),
    "step_size": Option(float, strict=True, help="step as a fraction of the budget"),
    "restarts": Option(int, low=1, help="random restarts, best kept per slice"),
    "loss": Option(str, metavar="mse|l1|ssim|relative_l2", help="attack objective (mse for most)"),
    "unsupervised": Option(bool, False, help="maximise the distance to the clean recon, not the target"),
    "eot_samples": Option(int, low=1, help="draws of a stochastic model (diffusion, smoothing) averaged per step "
                          "(8 for those, else 1)"),
    "candidates": Option(int, 11, low=1, help="fnaf: random features per slice"),
    "feature_size": Option(int, 10, low=1, help="fnaf: pixels per feature"),
    "gamma": Option(float, strict=True, help="fnaf: hit threshold on the criterion's score (default: 0.5 for linear, "
                    "1e-3 for missing and paper)"),
    "criterion": Option(str, "linear", metavar="|".join(CRITERIA), choices=CRITERIA,
                        help="fnaf: hit score; linear: the share of the feature zero-filling of the same data shows "
                        "and the model loses (reconguard); missing: the missing feature / max; paper: the raw "
                        "error in the feature region after mean/std normalisation, per 320x320 pixels (Cheng et al.)"),
    "gaussian_noise": Option(bool, False, help="perturbation attacks: also record Gaussian noise whose largest entry "
                             "equals the attack's (the old l-inf baseline) as condition gaussian_noise"),
    "seed": Option(int, 0, help="seed of random starts, features and the noise baseline"),
}


@dataclass(frozen=True)
class AttackPreset:
    """Defaults of one named attack.

    Attributes:
        kind: ``"perturbation"`` (a threat model and a budget) or ``"feature"`` (FNAF).
        domain, norm, eps: Default threat (perturbation attacks); ``norms`` lists allowed norms.
        support, linf_mode: The threat's support and linf convention (``None``/complex: the
            :class:`~reconguard.attacks.ThreatModel` defaults).
        loss: Default loss kind; ``unsupervised``: the loss is always against the clean
            reconstruction, compared as complex images unless the loss is ``ssim``.
        build: ``(options, threat, loss) -> attack`` (``options``: every key of :data:`OPTIONS`).
        options: The iteration options it accepts (others given are refused).
        about: One-line description with the source of the defaults (shown in ``--help``).
    """

    kind: str
    build: Callable[..., Any]
    domain: str = "kspace"
    norm: str = "l2"
    eps: float = 0.0
    norms: tuple[str, ...] = ("l2", "linf")
    support: str | None = None
    linf_mode: str = "complex"
    loss: str = "mse"
    unsupervised: bool = False
    options: tuple[str, ...] = ()
    about: str = ""


def _pgd(args, threat, loss, *, steps=10, step_size=None):
    return PGD(
        threat,
        loss,
        steps=_given(args.steps, steps),
        step_size=_given(args.step_size, step_size),
        restarts=_given(args.restarts, 1),
        eot_samples=args.eot_samples,
        gaussian_noise=args.gaussian_noise,
        seed=args.seed,
    )


def _given(value: Any, default: Any) -> Any:
    """The command-line value if given (even 0, which the attack then rejects), else the default."""
    return default if value is None else value


def _fgsm(args, threat, loss):
    if loss.reference == "clean":  # delta = 0 minimises the distance to the clean recon: zero gradient
        raise ConfigError("FGSM starts at delta = 0, where the --unsupervised loss has zero gradient; use PGD")
    return fgsm(threat, loss, gaussian_noise=args.gaussian_noise, seed=args.seed)


def _sparse(args, threat, loss):
    return SparseKSpace(threat, loss, steps=_given(args.steps, 10), eot_samples=args.eot_samples,
                        gaussian_noise=args.gaussian_noise, seed=args.seed)


def _fnaf(args, threat, loss, *, search="random"):
    return FNAF(num_candidates=args.candidates, size=args.feature_size, gamma=args.gamma, criterion=args.criterion,
                search=search, seed=args.seed)


_KSPACE_SOURCE = "Darestani et al. arXiv:2102.06103 and Genzel et al. arXiv:2011.04268 use ~0.01-0.08"
_ITERATIVE = ("steps", "step_size", "restarts", "loss", "unsupervised", "eot_samples")
ATTACKS: dict[str, AttackPreset] = {
    "pgd-kspace": AttackPreset(
        "perturbation", _pgd, "kspace", "l2", 0.02, options=_ITERATIVE,
        about=f"PGD on the acquired k-space samples, ||delta|| <= eps ||y|| per slice, 10 steps of "
        f"2.5/steps of the budget (Madry et al.); {_KSPACE_SOURCE}",
    ),
    "pgd-image": AttackPreset(
        "perturbation", lambda args, threat, loss: _pgd(args, threat, loss, step_size=0.2), "image", "linf", 0.01,
        options=_ITERATIVE,
        about="PGD on an image perturbation delta added to the measured data, y + A delta (so only its part "
        "on the acquired k-space reaches the model: the zero-filled image moves by A^H A delta), "
        "|delta| <= eps max|A^H y|, 10 steps of eps/5; the attacker touches only the measurements",
    ),
    "pgd-input": AttackPreset(
        "perturbation", lambda args, threat, loss: _pgd(args, threat, loss, step_size=0.2), "image", "linf", 0.01,
        support="network_input", linf_mode="real_imag", loss="relative_l2", unsupervised=True,
        options=("steps", "step_size", "restarts", "loss", "eot_samples"),
        about="PGD on the network's input image itself (not projected onto the measurements), real and "
        "imaginary parts each <= eps max|A^H y|, 10 steps of eps/5 from a random start, unsupervised loss "
        "||f(x+d) - f(x)|| / ||f(x)||: the threat of Saberi, Zhang, Akcakaya arXiv:2501.01908 (models that "
        "take input_delta: zero_filled, unet, resunet, modl)",
    ),
    "fgsm-kspace": AttackPreset(
        "perturbation", _fgsm, "kspace", "l2", 0.02, options=("loss",),
        about="one full-budget normalised-gradient step, pgd-kspace's budget (Goodfellow et al. arXiv:1412.6572)",
    ),
    "fgsm-image": AttackPreset(
        "perturbation", _fgsm, "image", "linf", 0.01, options=("loss",),
        about="one full-budget gradient-sign step, pgd-image's budget (Goodfellow et al. arXiv:1412.6572)",
    ),
    "sparse-kspace": AttackPreset(
        "perturbation", _sparse, "kspace", "l0", 10, norms=("l0",),
        options=("steps", "loss", "unsupervised", "eot_samples"),
        about="eps k-space spikes chosen by gradient, each |spike| <= --amplitude * max|y| (spike/herringbone "
        "artefacts; Antun et al. arXiv:1902.05300)",
    ),
    "fnaf": AttackPreset(
        "feature", _fnaf,
        about="false-negative features: 10-pixel features in the central region, random search over "
        "--candidates per slice; hit when the model loses more than --gamma of what zero-filling of the same "
        "data shows of the feature (--criterion; Cheng et al., MIDL 2020)",
    ),
    "fnaf-fd": AttackPreset(
        "feature", lambda args, threat, loss: _fnaf(args, threat, loss, search="finite_difference"),
        about="fnaf refined by finite-difference location search (step 10 px, 2 iterations; Cheng et al.)",
    ),
}


def build_attack(name: str, **options: Any) -> Any:
    """Build the attack ``name`` from its preset, overridden by ``options`` (keys of :data:`OPTIONS`).

    Raises:
        ConfigError: Unknown attack/option/norm/loss, eps < 0, or options the attack does not take.
    """
    preset = ATTACKS.get(name)
    if preset is None:
        raise ConfigError(f"unknown attack {name!r}; choose one of {list(ATTACKS)}")
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ConfigError(f"unknown attack option(s) {unknown}; choose from {sorted(OPTIONS)}")
    args = SimpleNamespace(**{**{k: o.default for k, o in OPTIONS.items()}, **options})
    given = {"steps": args.steps, "step_size": args.step_size, "restarts": args.restarts, "loss": args.loss,
             "unsupervised": args.unsupervised or None, "eps": args.eps, "norm": args.norm,
             "eot_samples": args.eot_samples, "gaussian_noise": args.gaussian_noise or None}
    allowed = set(preset.options) | ({"eps", "norm", "gaussian_noise"} if preset.kind == "perturbation" else set())
    refused = [k for k, v in given.items() if v is not None and k not in allowed]
    if refused:
        raise ConfigError(f"{name} does not take the option(s) {', '.join(refused)}")
    if preset.kind == "feature":
        return preset.build(args, None, None)
    norm = args.norm or preset.norm
    if norm not in preset.norms:
        raise ConfigError(f"norm {norm!r} is not available for {name}; choose one of {list(preset.norms)}")
    eps = preset.eps if args.eps is None else args.eps
    threat = ThreatModel(domain=preset.domain, norm=norm, eps=eps, relative=args.relative, amplitude=args.amplitude,
                         support=preset.support, linf_mode=preset.linf_mode)
    kind, unsupervised = args.loss or preset.loss, args.unsupervised or preset.unsupervised
    loss = AttackLoss(kind=kind, reference="clean" if unsupervised else "target",
                      complex_valued=preset.unsupervised and kind != "ssim")
    return preset.build(args, threat, loss)


def attack_table() -> str:
    """The attacks and their defaults, one wrapped line each (``--help`` epilogues)."""
    lines = ["attacks (defaults; the options after each name override them):"]
    for name, p in ATTACKS.items():
        budget = f"{p.domain} {p.norm}, eps {p.eps:g}: " if p.kind == "perturbation" else ""
        lines.append(textwrap.fill(budget + p.about, 96, initial_indent=f"  {name:<14}",
                                   subsequent_indent=" " * 16, break_on_hyphens=False))
    return "\n".join(lines)
