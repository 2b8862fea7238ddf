"""The edXML format (QCVN 102:2016): model, parse, build, validate. Pure: no I/O, no asyncio."""
