"""Encoders (LN ResNet-v2) and classification heads."""
