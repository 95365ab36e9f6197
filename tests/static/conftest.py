"""Checks of files as they are (docs, the Helm chart, the image, kind configs, workflows, protos) and of the
wheel built from them; none starts a cluster."""
