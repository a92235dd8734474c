"""Client-level DP budgets: calibrated σ and ε for typical federations.

For N clients, m per round and T rounds, prints (markdown) the noise multiplier σ
calibrated to each target ε at δ, under fixed-size sampling (what the engine's
sampler does; replace-one, RDP) and Poisson sampling with q = m/N (add/remove,
RDP), plus the PLD ε of the Poisson σ as a tightness check. Pure accounting, a
few seconds on one core.

    python bench/privacy_accounting.py [--clients 100] [--per-round 10]
        [--rounds 50 200] [--targets 1 4 8] [--delta 1e-5] [--pld]
"""

from __future__ import annotations

import argparse
import logging
import time

from fedpeft.privacy import calibrate_noise_multiplier, epsilon_after


def _row(n: int, m: int, rounds: int, target: float, delta: float, pld: bool) -> str:
    fixed = calibrate_noise_multiplier(
        target, delta, rounds, "fixed", num_clients=n, clients_per_round=m
    )
    poisson = calibrate_noise_multiplier(
        target, delta, rounds, "poisson", num_clients=n, clients_per_round=m
    )
    pld_eps = "-"
    if pld:
        eps = epsilon_after(
            rounds, poisson, delta, "poisson", sample_rate=m / n, accountant="pld"
        )
        pld_eps = f"{eps:.3f}"
    return f"| {rounds} | {target:g} | {fixed:.4f} | {poisson:.4f} | {pld_eps} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--per-round", type=int, default=10)
    parser.add_argument("--rounds", type=int, nargs="+", default=[50, 200])
    parser.add_argument("--targets", type=float, nargs="+", default=[1.0, 4.0, 8.0])
    parser.add_argument("--delta", type=float, default=1e-5)
    parser.add_argument("--pld", action="store_true", help="also PLD ε (slow)")
    args = parser.parse_args()
    # dp-accounting logs (through absl) each low RDP order it drops; dropping an
    # order only makes ε larger, so those warnings are noise here
    logging.getLogger("absl").setLevel(logging.ERROR)
    started = time.perf_counter()
    print(f"N={args.clients} m={args.per_round} delta={args.delta:g}\n")
    print(
        "| rounds | target ε | σ fixed (RDP) | σ Poisson (RDP) | PLD ε at σ Poisson |"
    )
    print("|---|---|---|---|---|")
    for rounds in args.rounds:
        for target in args.targets:
            print(
                _row(args.clients, args.per_round, rounds, target, args.delta, args.pld)
            )
    print(f"\n{time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
