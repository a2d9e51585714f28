"""Exporters: a converted :class:`~spkeras.snn.SpikingNetwork` written in other formats (NIR)."""
