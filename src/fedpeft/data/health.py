"""A synthetic healthcare federation: hospitals whose patients differ.

:func:`generate_patients` draws patient records from a documented generative
model, seeded by one ``numpy`` generator: demographics (age, sex, ethnicity,
region), the admitting hospital, five comorbidities, a latent acuity of the
admission, vital signs, laboratory values, and a short clinical note from
templates. The outcome (``adverse``: ICU transfer or death within 7 days,
else ``stable``) is drawn from a logistic risk model that is linear in
:func:`risk_features`, with the coefficients :data:`RISK_COEFFICIENTS`; a
logistic fit on a large sample recovers them (tested).

Hospitals differ by construction (:data:`HOSPITALS`):

* **quantity skew**: their shares of all admissions range 5–26%;
* **feature skew**: each has its own age distribution, sex ratio, ethnic mix
  (set by its region and catchment) and case mix (the mean of the latent
  acuity: tertiary centres see sicker patients);
* **label skew**, as a consequence: the outcome depends on age,
  comorbidities and acuity, so adverse-outcome rates differ by hospital.

Ethnicity has no term of its own in the risk model; it changes the
prevalence of diabetes and hypertension (documented offsets), so outcome
rates differ by group only through them. Records are kept tabular (the
metadata columns, for a tabular baseline such as logistic regression) and
serialised to text for the text backbones (:func:`clinical_note`).

The shipped corpus ``synthetic-health`` is :data:`DEFAULT_PATIENTS` patients
drawn with generator seed 0, so it is the same data on every machine; its
clients are the hospitals (``partition.method = "feature"``,
``partition.group_column = "hospital"``, ``federation.num_clients = 8``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fedpeft.data.corpus import RawCorpus, RawSplit

ETHNICITIES = ("white", "black", "hispanic", "asian", "other")
REGIONS = ("north", "south", "east", "west")
COMORBIDITIES = ("diabetes", "hypertension", "ckd", "copd", "heart_failure")
AGE_GROUPS = ((18, "18-44"), (45, "45-64"), (65, "65-79"), (80, "80+"))
OUTCOMES = ("adverse", "stable")
DEFAULT_PATIENTS = 24_000


@dataclass(frozen=True)
class Hospital:
    """One hospital's population.

    Attributes:
        name: Its id (the ``hospital`` column).
        region: One of :data:`REGIONS`.
        share: Its share of all admissions.
        age_mean: Mean age of its patients (sd 16, clipped to 18–99).
        female: Share of female patients.
        ethnicity: Mixture over :data:`ETHNICITIES`.
        acuity: Mean of the latent acuity of its admissions (sd 1).
    """

    name: str
    region: str
    share: float
    age_mean: float
    female: float
    ethnicity: tuple[float, float, float, float, float]
    acuity: float


HOSPITALS: tuple[Hospital, ...] = (
    Hospital("st-mary", "north", 0.26, 68, 0.52, (0.78, 0.06, 0.06, 0.05, 0.05), 0.6),
    Hospital(
        "city-general", "south", 0.18, 55, 0.50, (0.35, 0.40, 0.17, 0.03, 0.05), 0.4
    ),
    Hospital("valley", "east", 0.14, 61, 0.55, (0.55, 0.10, 0.10, 0.20, 0.05), 0.0),
    Hospital("coastal", "west", 0.12, 52, 0.49, (0.40, 0.05, 0.35, 0.15, 0.05), 0.2),
    Hospital(
        "rural-north", "north", 0.09, 71, 0.51, (0.90, 0.02, 0.03, 0.01, 0.04), -0.3
    ),
    Hospital("harbor", "south", 0.08, 49, 0.47, (0.25, 0.50, 0.20, 0.02, 0.03), 0.1),
    Hospital("university", "east", 0.08, 58, 0.50, (0.45, 0.15, 0.12, 0.23, 0.05), 0.9),
    Hospital("mission", "west", 0.05, 45, 0.53, (0.20, 0.05, 0.65, 0.05, 0.05), -0.2),
)

# Comorbidity prevalence: sigmoid(intercept + slope * (age - 60) / 10 + offsets).
PREVALENCE: Mapping[str, tuple[float, float]] = {
    "diabetes": (-1.6, 0.35),
    "hypertension": (-0.4, 0.55),
    "ckd": (-2.8, 0.50),
    "copd": (-2.4, 0.35),
    "heart_failure": (-3.0, 0.60),
}
ETHNIC_OFFSETS: Mapping[str, Mapping[str, float]] = {
    "diabetes": {"black": 0.5, "hispanic": 0.5, "asian": 0.3},
    "hypertension": {"black": 0.6, "hispanic": 0.2},
}
# Comorbidities that raise others: ckd with diabetes/hypertension, heart
# failure with hypertension.
COMORBID_OFFSETS: Mapping[str, Mapping[str, float]] = {
    "ckd": {"diabetes": 0.8, "hypertension": 0.6},
    "heart_failure": {"hypertension": 0.7},
}

# The outcome's log-odds: intercept + sum of coefficient x feature, the
# features as :func:`risk_features` computes them from the record.
RISK_INTERCEPT = -3.0
RISK_COEFFICIENTS: Mapping[str, float] = {
    "age_decades": 0.7,  # (age - 60) / 10
    "male": 0.3,
    "diabetes": 0.4,
    "hypertension": 0.2,
    "ckd": 0.9,
    "copd": 0.7,
    "heart_failure": 1.2,
    "heart_rate_10": 0.4,  # (heart rate - 80) / 10
    "resp_rate_5": 0.7,  # (respiratory rate - 16) / 5
    "systolic_10": -0.3,  # (systolic pressure - 120) / 10
    "spo2_deficit_2": 0.6,  # (96 - SpO2) / 2
    "temp_excess": 0.5,  # temperature - 37 °C
    "log_creatinine": 1.2,
    "log_lactate": 1.8,
    "wbc_5": 0.5,  # (white cells - 8) / 5
}


@dataclass(frozen=True, eq=False)
class Patients:
    """Patient records as columns (each of length ``n``) and their outcomes."""

    columns: Mapping[str, npt.NDArray[np.generic]]
    outcome: npt.NDArray[np.int64]  # 1 = adverse

    def __len__(self) -> int:
        return len(self.outcome)


def generate_patients(
    n: int,
    rng: np.random.Generator,
    hospitals: Sequence[Hospital] = HOSPITALS,
) -> Patients:
    """``n`` patient records drawn from the documented model.

    Raises:
        ValueError: for ``n < 1`` or hospital shares that are not a
            distribution, or an unknown region.
    """
    if n < 1:
        raise ValueError(f"n={n}: need at least one patient")
    shares = np.array([h.share for h in hospitals], np.float64)
    if not np.isclose(shares.sum(), 1.0) or (shares <= 0).any():
        raise ValueError(f"hospital shares must be positive and sum to 1: {shares}")
    for h in hospitals:
        if h.region not in REGIONS:
            raise ValueError(f"hospital {h.name}: region {h.region!r} not in {REGIONS}")
    where = rng.choice(len(hospitals), size=n, p=shares)
    pick = np.array([[h.age_mean, h.female, h.acuity] for h in hospitals])[where]
    age = np.clip(np.rint(rng.normal(pick[:, 0], 16.0)), 18, 99)
    female = rng.random(n) < pick[:, 1]
    mix = np.array([h.ethnicity for h in hospitals])[where]
    ethnicity = (rng.random(n)[:, None] > np.cumsum(mix, axis=1)).sum(axis=1)
    ethnicity = np.minimum(ethnicity, len(ETHNICITIES) - 1)
    eth_names = np.array(ETHNICITIES)[ethnicity]

    decades = (age - 60.0) / 10.0
    comorbid: dict[str, npt.NDArray[np.bool_]] = {}
    for name in COMORBIDITIES:
        intercept, slope = PREVALENCE[name]
        logit = intercept + slope * decades
        for group, offset in ETHNIC_OFFSETS.get(name, {}).items():
            logit = logit + offset * (eth_names == group)
        for other, offset in COMORBID_OFFSETS.get(name, {}).items():
            logit = logit + offset * comorbid[other]
        comorbid[name] = rng.random(n) < _sigmoid(logit)
    dm, htn, ckd, copd, hf = (comorbid[c].astype(np.float64) for c in COMORBIDITIES)

    acuity = rng.normal(pick[:, 2], 1.0)  # latent: never recorded
    heart_rate = np.rint(80 + 8 * acuity + 6 * copd + rng.normal(0, 10, n))
    resp_rate = np.rint(
        np.clip(16 + 2.5 * acuity + 2 * copd + rng.normal(0, 2.5, n), 8, 45)
    )
    systolic = np.rint(128 - 8 * acuity + 10 * htn + rng.normal(0, 15, n))
    spo2 = np.rint(
        np.clip(
            97 - 1.8 * acuity - 2.5 * copd - 1.5 * hf + rng.normal(0, 1.5, n), 70, 100
        )
    )
    temp = np.round(37 + 0.35 * acuity + rng.normal(0, 0.5, n), 1)
    creatinine = np.round(
        np.exp(np.log(0.9) + 0.08 * acuity + 0.7 * ckd + rng.normal(0, 0.2, n)), 2
    )
    lactate = np.round(np.exp(np.log(1.2) + 0.25 * acuity + rng.normal(0, 0.3, n)), 1)
    wbc = np.round(np.clip(8 + 2.2 * acuity + rng.normal(0, 2.5, n), 1, None), 1)
    glucose = np.rint(
        np.clip(105 + 60 * dm + 10 * acuity + rng.normal(0, 20, n), 50, None)
    )
    hemoglobin = np.round(
        13.5 - 1.2 * female - 0.8 * ckd - 0.3 * acuity + rng.normal(0, 1.2, n), 1
    )

    columns: dict[str, npt.NDArray[np.generic]] = {
        "hospital": np.array([h.name for h in hospitals])[where],
        "region": np.array([h.region for h in hospitals])[where],
        "age": age.astype(np.int64),
        "age_group": _age_groups(age),
        "sex": np.where(female, "female", "male"),
        "ethnicity": eth_names,
        **{c: comorbid[c].astype(np.int64) for c in COMORBIDITIES},
        "heart_rate": heart_rate,
        "resp_rate": resp_rate,
        "systolic": systolic,
        "spo2": spo2,
        "temperature": temp,
        "creatinine": creatinine,
        "lactate": lactate,
        "wbc": wbc,
        "glucose": glucose,
        "hemoglobin": hemoglobin,
    }
    design = risk_features(columns)
    coefficients = np.array([RISK_COEFFICIENTS[k] for k in RISK_COEFFICIENTS])
    risk = _sigmoid(RISK_INTERCEPT + design @ coefficients)
    outcome = (rng.random(n) < risk).astype(np.int64)
    return Patients(columns, outcome)


def risk_features(
    columns: Mapping[str, npt.NDArray[np.generic]],
) -> npt.NDArray[np.float64]:
    """The risk model's design matrix ``(n, len(RISK_COEFFICIENTS))``, columns
    in the order of :data:`RISK_COEFFICIENTS` (also the tabular baseline's
    features)."""

    def col(name: str) -> npt.NDArray[np.float64]:
        return np.asarray(columns[name], np.float64)

    features = {
        "age_decades": (col("age") - 60) / 10,
        "male": (np.asarray(columns["sex"]) == "male").astype(np.float64),
        **{c: col(c) for c in COMORBIDITIES},
        "heart_rate_10": (col("heart_rate") - 80) / 10,
        "resp_rate_5": (col("resp_rate") - 16) / 5,
        "systolic_10": (col("systolic") - 120) / 10,
        "spo2_deficit_2": (96 - col("spo2")) / 2,
        "temp_excess": col("temperature") - 37,
        "log_creatinine": np.log(col("creatinine")),
        "log_lactate": np.log(col("lactate")),
        "wbc_5": (col("wbc") - 8) / 5,
    }
    return np.stack([features[k] for k in RISK_COEFFICIENTS], axis=1)


_HISTORY = {
    "diabetes": "type 2 diabetes",
    "hypertension": "hypertension",
    "ckd": "chronic kidney disease",
    "copd": "COPD",
    "heart_failure": "heart failure",
}
_ARRIVAL = (
    "Presented to the emergency department",
    "Admitted from clinic",
    "Brought in by ambulance",
    "Referred by the primary care physician",
)
# (column, threshold, at or above it (else below it), wordings)
_COMPLAINTS: tuple[tuple[str, float, bool, tuple[str, str]], ...] = (
    ("spo2", 92, False, ("short of breath at rest", "desaturating on room air")),
    ("resp_rate", 24, True, ("tachypnoeic", "breathing rapidly")),
    ("temperature", 38.0, True, ("febrile", "with fevers and rigors")),
    ("heart_rate", 105, True, ("tachycardic", "with palpitations")),
    ("systolic", 100, False, ("hypotensive", "lightheaded on standing")),
    ("lactate", 2.5, True, ("with a raised lactate", "looking unwell")),
)
_WELL = ("comfortable at rest", "alert and well perfused", "in no acute distress")


def clinical_note(
    columns: Mapping[str, npt.NDArray[np.generic]], i: int, rng: np.random.Generator
) -> str:
    """Record ``i`` as a short admission note (templates; ``rng`` picks the
    wording)."""

    def pick(options: Sequence[str]) -> str:
        return options[int(rng.integers(len(options)))]

    history = [_HISTORY[c] for c in COMORBIDITIES if columns[c][i]]
    findings = [
        pick(words)
        for name, threshold, above, words in _COMPLAINTS
        if (float(columns[name][i]) >= threshold) == above
    ]
    state = ", ".join(findings) if findings else pick(_WELL)
    past = "History of " + ", ".join(history) if history else "No chronic conditions"
    c = {name: columns[name][i] for name in columns}
    return (
        f"{int(c['age'])}-year-old {c['sex']}, "
        f"{c['ethnicity']}. {pick(_ARRIVAL)}, {state}. {past}. "
        f"HR {c['heart_rate']:.0f}, BP {c['systolic']:.0f} systolic, "
        f"RR {c['resp_rate']:.0f}, SpO2 {c['spo2']:.0f}%, "
        f"T {c['temperature']:.1f} C. Creatinine {c['creatinine']:.2f}, "
        f"lactate {c['lactate']:.1f}, WBC {c['wbc']:.1f}, "
        f"glucose {c['glucose']:.0f}, Hb {c['hemoglobin']:.1f}."
    )


def health_corpus(n: int = DEFAULT_PATIENTS, seed: int = 0) -> RawCorpus:
    """``n`` records as a corpus: the notes as texts, ``adverse``/``stable`` as
    labels, every record column as metadata."""
    rng = np.random.default_rng(seed)
    patients = generate_patients(n, rng)
    notes = np.random.default_rng([seed, 1])
    texts = tuple(clinical_note(patients.columns, i, notes) for i in range(n))
    labels = tuple(OUTCOMES[0] if y else OUTCOMES[1] for y in patients.outcome)
    return RawCorpus(
        train=RawSplit(
            texts=texts,
            labels=labels,
            metadata=dict(patients.columns),
            source=f"synthetic-health (n={n}, seed={seed})",
        )
    )


def _age_groups(age: npt.NDArray[np.float64]) -> npt.NDArray[np.str_]:
    bounds = np.array([low for low, _ in AGE_GROUPS])
    names = np.array([name for _, name in AGE_GROUPS])
    return names[np.searchsorted(bounds, age, side="right") - 1]


def _sigmoid(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return 1.0 / (1.0 + np.exp(-x))
