"""The I/O leaves every side shares: the child channel's framing (``_channel``), the one
switch between the SDK's majors and its HTTP client (``_http``), daemon-thread calls
(``_threads``). Imports only the pure core below it.
"""
