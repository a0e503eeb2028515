"""Export: getting wide events out of the processes, whichever side made them.

The fork handover of the SDK's exporters (``handover``), the workers' span processor
(``processor``), the direct OTLP wire encoder (``otlp_wire``) and the exporters built on it
(``exporters``), the console exporter (``console``), the worker's and the master's resource
(``resource``), and
where export failures are logged (``log_routing``). Imports neither side.
"""
