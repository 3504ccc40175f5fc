#!/usr/bin/env python3
"""The ML-KEM-768 known answer of core/src/ssh/kex/tests.rs from kyber-py (an independent
FIPS 203 implementation): d = 00..1f, z = 20..3f, m = 40..5f. Prints SHA-256(ek),
SHA-256(ct) and the shared secret in hex, one a line."""
import hashlib

from kyber_py.ml_kem import ML_KEM_768

d = bytes(range(0, 32))
z = bytes(range(32, 64))
m = bytes(range(64, 96))
ek, dk = ML_KEM_768._keygen_internal(d, z)
ss, ct = ML_KEM_768._encaps_internal(ek, m)
assert ML_KEM_768.decaps(dk, ct) == ss
print(hashlib.sha256(ek).hexdigest())
print(hashlib.sha256(ct).hexdigest())
print(ss.hex())
