"""Resource names as the sim's Store, the driver's tests and kubectl spell them (``<plural>.<group>``)."""

from __future__ import annotations

CLAIMS = "resourceclaims.resource.k8s.io"
TEMPLATES = "resourceclaimtemplates.resource.k8s.io"
SLICES = "resourceslices.resource.k8s.io"
CLASSES = "deviceclasses.resource.k8s.io"
