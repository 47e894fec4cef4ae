"""AWS wire protocol: SigV4 verification and signing, operation identification, IAM mapping.

Everything in this package is pure logic (no sockets, no database): the gateway feeds it
raw request parts and acts on what it returns.
"""
