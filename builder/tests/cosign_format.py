#!/usr/bin/env python3
"""An independent reading of cosign's signature format (cosign's
specs/SIGNATURE_SPEC.md), for berth's signature tests: plain HTTP to the
registry's API with urllib, ed25519 with Debian's python3-cryptography.

  cosign_format.py verify HOST REPO TAG PUB    check berth's signature
  cosign_format.py sign HOST REPO TAG KEY [--digest D] [--identity R]
                                               add one, as cosign would
  cosign_format.py public KEY PASSWORD         the public key of an
                                               encrypted PKCS#8 key, as PEM
  cosign_format.py verify-blob FILE SIG PUB    check a file's signature as
                                               cosign sign-blob writes it
                                               (base64 ed25519)
  cosign_format.py sign-blob FILE KEY SIG      write one

Exit status 0 when done, 1 with a line on stderr when not.
"""

import base64
import hashlib
import json
import sys
import urllib.error
import urllib.request

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

PAYLOAD_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
ANNOTATION = "dev.cosignproject.cosign/signature"
ACCEPT = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)


def fail(message):
    print(message, file=sys.stderr)
    sys.exit(1)


def request(url, data=None, method=None, headers=None):
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    with urllib.request.urlopen(req, timeout=10) as response:
        return response.read(), response.headers


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def manifest(host, repo, reference):
    body, _ = request(
        f"http://{host}/v2/{repo}/manifests/{reference}", headers={"Accept": ACCEPT}
    )
    return body


def blob(host, repo, digest):
    body, _ = request(f"http://{host}/v2/{repo}/blobs/{digest}")
    if sha256(body) != digest:
        fail(f"blob {digest} does not match its digest")
    return body


def signature_tag(digest):
    algorithm, hex_digest = digest.split(":", 1)
    return f"{algorithm}-{hex_digest}.sig"


def verify(host, repo, tag, public_path):
    public = load_public(public_path)
    digest = sha256(manifest(host, repo, tag))
    try:
        sig_manifest = json.loads(manifest(host, repo, signature_tag(digest)))
    except urllib.error.HTTPError as e:
        fail(f"no signature manifest for {digest}: HTTP {e.code}")
    if sig_manifest["config"]["mediaType"] != "application/vnd.oci.image.config.v1+json":
        fail("the config is not an OCI image config")
    blob(host, repo, sig_manifest["config"]["digest"])
    verified = 0
    for layer in sig_manifest["layers"]:
        if layer["mediaType"] != PAYLOAD_TYPE:
            continue
        payload = blob(host, repo, layer["digest"])
        signature = base64.b64decode(layer["annotations"][ANNOTATION])
        try:
            public.verify(signature, payload)
        except Exception:
            continue
        critical = json.loads(payload)["critical"]
        if (
            critical["type"] == "cosign container image signature"
            and critical["image"]["docker-manifest-digest"] == digest
            and critical["identity"]["docker-reference"] == f"{host}/{repo}"
        ):
            verified += 1
    if not verified:
        fail(f"no layer of {signature_tag(digest)} verifies with {public_path}")
    print(f"verified {verified} {digest}")


def upload(host, repo, data):
    digest = sha256(data)
    _, headers = request(f"http://{host}/v2/{repo}/blobs/uploads/", data=b"", method="POST")
    location = headers["Location"]
    if location.startswith("/"):
        location = f"http://{host}{location}"
    separator = "&" if "?" in location else "?"
    request(
        f"{location}{separator}digest={digest}",
        data=data,
        method="PUT",
        headers={"Content-Type": "application/octet-stream"},
    )
    return digest


def sign(host, repo, tag, key_path, options):
    with open(key_path, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        fail(f"{key_path}: not an ed25519 key")
    digest = sha256(manifest(host, repo, tag))
    payload = json.dumps(
        {
            "critical": {
                "identity": {"docker-reference": options.get("--identity", f"{host}/{repo}")},
                "image": {"docker-manifest-digest": options.get("--digest", digest)},
                "type": "cosign container image signature",
            },
            "optional": None,
        },
        separators=(",", ":"),
    ).encode()
    layer = {
        "mediaType": PAYLOAD_TYPE,
        "size": len(payload),
        "digest": upload(host, repo, payload),
        "annotations": {ANNOTATION: base64.b64encode(key.sign(payload)).decode()},
    }
    config = json.dumps(
        {
            "architecture": "",
            "os": "",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [layer["digest"]]},
        }
    ).encode()
    document = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "size": len(config),
            "digest": upload(host, repo, config),
        },
        "layers": [layer],
    }
    request(
        f"http://{host}/v2/{repo}/manifests/{signature_tag(digest)}",
        data=json.dumps(document).encode(),
        method="PUT",
        headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
    )
    print(f"signed {digest}")


def public(key_path, password):
    with open(key_path, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=password.encode())
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    sys.stdout.write(pem.decode())


def load_public(public_path):
    with open(public_path, "rb") as f:
        public = serialization.load_pem_public_key(f.read())
    if not isinstance(public, Ed25519PublicKey):
        fail(f"{public_path}: not an ed25519 key")
    return public


def verify_blob(file_path, signature_path, public_path):
    public = load_public(public_path)
    with open(file_path, "rb") as f:
        data = f.read()
    with open(signature_path, "rb") as f:
        signature = base64.b64decode(f.read().strip(), validate=True)
    try:
        public.verify(signature, data)
    except Exception:
        fail(f"{signature_path} is not a signature of {file_path} by {public_path}")
    print(f"verified {file_path}")


def sign_blob(file_path, key_path, signature_path):
    with open(key_path, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        fail(f"{key_path}: not an ed25519 key")
    with open(file_path, "rb") as f:
        data = f.read()
    with open(signature_path, "wb") as f:
        f.write(base64.b64encode(key.sign(data)))
    print(f"signed {file_path}")


def main(args):
    if len(args) == 5 and args[0] == "verify":
        verify(*args[1:])
    elif len(args) >= 5 and args[0] == "sign" and len(args) % 2 == 1:
        sign(*args[1:5], dict(zip(args[5::2], args[6::2])))
    elif len(args) == 3 and args[0] == "public":
        public(*args[1:])
    elif len(args) == 4 and args[0] == "verify-blob":
        verify_blob(*args[1:])
    elif len(args) == 4 and args[0] == "sign-blob":
        sign_blob(*args[1:])
    else:
        fail(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
