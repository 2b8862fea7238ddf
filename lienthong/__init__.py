"""lienthong: the document-interchange daemon for Vietnam's state agencies.

The package splits into pure cores (``edxml``, ``trust``, ``routing``) that do no I/O,
and the shell (``store``, ``transport``, ``gateway``, ``node``, ``cli``) that moves bytes
between the network, the disk and those cores.
"""

__version__ = "0.1.0"
