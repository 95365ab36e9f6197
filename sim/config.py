"""SimConfig: the emulated Kubernetes version and its feature gates.

The versions and the gate table are drakit's (drakit/gates.py), shared with the suite's input check and
localkube. A gate named on the command line overrides the version default; an unknown gate is an error,
as it is for a real kube-apiserver.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from drakit.gates import DEFAULT_VERSION, SUPPORTED_VERSIONS, gate_defaults, parse_feature_gates

__all__ = ["DEFAULT_VERSION", "SUPPORTED_VERSIONS", "SimConfig"]


@dataclass
class SimConfig:
    kube_version: str = DEFAULT_VERSION
    feature_gates: dict[str, bool] = field(default_factory=dict)  # explicit overrides only

    def __post_init__(self) -> None:
        self._effective = gate_defaults(self.kube_version)
        for name, value in self.feature_gates.items():
            if name not in self._effective:
                raise ValueError(
                    f"unknown feature gate {name!r}; known: {', '.join(sorted(self._effective))}"
                )
            self._effective[name] = bool(value)

    @classmethod
    def from_flags(cls, kube_version: str = DEFAULT_VERSION, feature_gates: str = "") -> SimConfig:
        return cls(kube_version=kube_version, feature_gates=parse_feature_gates(feature_gates))

    def gate(self, name: str) -> bool:
        try:
            return self._effective[name]
        except KeyError:
            raise KeyError(
                f"unknown feature gate {name!r}; known: {', '.join(sorted(self._effective))}"
            ) from None

    @property
    def gates(self) -> dict[str, bool]:
        return dict(self._effective)

    @property
    def git_version(self) -> str:
        return f"v{self.kube_version}.0"
