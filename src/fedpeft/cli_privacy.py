"""``fedpeft privacy``: client-level ε for a plan, and σ for a target ε."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

import typer
from rich.console import Console

privacy_app = typer.Typer(
    help="Client-level DP accounting (DP-FedAvg, dp-accounting).", no_args_is_help=True
)

SamplingOpt = Annotated[
    str,
    typer.Option(
        "--sampling",
        help="poisson: each client joins with probability q; fixed: m of N "
        "without replacement (give --num-clients and --clients-per-round).",
    ),
]


RoundsOpt = Annotated[int, typer.Option("--rounds", "-T", help="rounds T")]
DeltaOpt = Annotated[float, typer.Option("--delta", help="δ")]
RateOpt = Annotated[
    float | None, typer.Option("--sample-rate", "-q", help="Poisson rate q")
]
ClientsOpt = Annotated[int | None, typer.Option("--num-clients", help="N (fixed)")]
PerRoundOpt = Annotated[
    int | None, typer.Option("--clients-per-round", help="m (fixed)")
]
AccountantOpt = Annotated[str, typer.Option("--accountant", help="rdp or pld")]


def _sampling_kwargs(
    sampling: str,
    sample_rate: float | None,
    num_clients: int | None,
    clients_per_round: int | None,
) -> dict[str, Any]:
    if sampling not in ("poisson", "fixed"):
        raise typer.BadParameter(f"--sampling {sampling!r}: choose poisson or fixed")
    if sampling == "poisson":
        if sample_rate is None:
            raise typer.BadParameter("--sampling poisson needs --sample-rate q")
        return {"sample_rate": sample_rate}
    if num_clients is None or clients_per_round is None:
        raise typer.BadParameter(
            "--sampling fixed needs --num-clients N and --clients-per-round m"
        )
    return {"num_clients": num_clients, "clients_per_round": clients_per_round}


@privacy_app.command("epsilon")
def epsilon(
    noise_multiplier: Annotated[float, typer.Option("--noise-multiplier", "-z")],
    rounds: RoundsOpt,
    delta: DeltaOpt = 1e-5,
    sampling: SamplingOpt = "poisson",
    sample_rate: RateOpt = None,
    num_clients: ClientsOpt = None,
    clients_per_round: PerRoundOpt = None,
    accountant: AccountantOpt = "rdp",
) -> None:
    """ε after T rounds of DP-FedAvg with noise multiplier σ."""
    from fedpeft.privacy import epsilon_after

    kwargs = _sampling_kwargs(sampling, sample_rate, num_clients, clients_per_round)
    eps = _run(
        lambda: epsilon_after(
            rounds,
            noise_multiplier,
            delta,
            _s(sampling),
            accountant=_a(accountant),
            **kwargs,
        )
    )
    Console().print(
        f"ε = {eps:.4f} at δ = {delta:g} after {rounds} rounds "
        f"(σ = {noise_multiplier:g}, {sampling} sampling, {accountant.upper()})"
    )


@privacy_app.command("calibrate")
def calibrate(
    target_epsilon: Annotated[float, typer.Option("--target-epsilon", "-e")],
    rounds: RoundsOpt,
    delta: DeltaOpt = 1e-5,
    sampling: SamplingOpt = "poisson",
    sample_rate: RateOpt = None,
    num_clients: ClientsOpt = None,
    clients_per_round: PerRoundOpt = None,
    accountant: AccountantOpt = "rdp",
) -> None:
    """The smallest noise multiplier σ whose ε stays within the target (never over)."""
    from fedpeft.privacy import calibrate_noise_multiplier, epsilon_after

    kwargs = _sampling_kwargs(sampling, sample_rate, num_clients, clients_per_round)
    sigma = _run(
        lambda: calibrate_noise_multiplier(
            target_epsilon,
            delta,
            rounds,
            _s(sampling),
            accountant=_a(accountant),
            **kwargs,
        )
    )
    eps = epsilon_after(
        rounds, sigma, delta, _s(sampling), accountant=_a(accountant), **kwargs
    )
    Console().print(
        f"σ = {sigma:.4f} gives ε = {eps:.4f} ≤ {target_epsilon:g} at δ = {delta:g} "
        f"after {rounds} rounds ({sampling} sampling, {accountant.upper()})"
    )


def _s(sampling: str) -> Literal["poisson", "fixed"]:
    return "poisson" if sampling == "poisson" else "fixed"


def _a(accountant: str) -> Literal["rdp", "pld"]:
    if accountant not in ("rdp", "pld"):
        raise typer.BadParameter(f"--accountant {accountant!r}: choose rdp or pld")
    return "rdp" if accountant == "rdp" else "pld"


def _run(compute: Callable[[], float]) -> float:
    try:
        return compute()
    except ValueError as err:  # bad combinations found by the privacy package
        raise typer.BadParameter(str(err)) from None
