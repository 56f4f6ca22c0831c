"""Pure: standardized, deterministic object keys and slugs.

Keys never contain randomness, so a retried task writes the same keys again instead of
leaving orphans, and the same content under the same row always lands in the same place.

Public layout (one folder per row and source file)::

    media/7f/demo.photo-42/sunset-3f2a9c1b0d2e-9b1c04aa/w640.webp
    ^     ^  ^             ^                   ^        ^
    |     |  |             |                   |        output name + format extension
    |     |  |             |                   8 hex of a hash of the source's full name
    |     |  |             slug of the source's file name
    |     |  the row's identity: model label and primary key
    |     two hex digits of a hash of the identity: spreads S3 prefixes
    KEY_PREFIX setting

The folder is unique to the source file (its whole name, folders and extension included:
``legacy/2019/img-0001.jpg`` and ``legacy/2020/img-0001.png`` share a slug, not a folder),
so a new upload gets new keys and a superseded render can never touch the outputs of the
file that replaced it.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
import unicodedata

_NON_SLUG = re.compile(r"[^a-z0-9]+")
_MAX_SLUG = 60


def slugify(text: str, *, max_length: int | None = _MAX_SLUG) -> str:
    """Lower-case ASCII slug: accents folded (both unicode forms alike), runs of anything
    else collapsed to one hyphen. May return "" for text with no letters or digits.

    NFKD splits accented letters into letter + combining mark (and compatibility forms
    like ``ﬁ`` into ``fi``); dropping non-ASCII then keeps the letter."""
    ascii_text = (
        unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii").lower()
    )
    slug = _NON_SLUG.sub("-", ascii_text).strip("-")
    return slug if max_length is None else slug[:max_length].rstrip("-")


def slugify_filename(name: str, *, fallback: str = "file") -> str:
    """Slug of a file name's stem (folders and extension dropped)."""
    stem = posixpath.splitext(posixpath.basename(name.replace("\\", "/")))[0]
    return slugify(stem) or fallback


def original_name(directory: str, filename: str, sha256: str) -> str:
    """Primary-bucket name of an uploaded original: its slug plus 12 hex of its content
    hash, under ``directory``. Two different files never share a name; the same file
    always gets the same one."""
    ext = posixpath.splitext(filename)[1].lower()
    ext = ext if re.fullmatch(r"\.[a-z0-9]{1,5}", ext) else ""
    # Short enough that upload_to + name fits ImageField's default 100 characters.
    stem = slugify(posixpath.splitext(posixpath.basename(filename))[0], max_length=40) or "file"
    name = f"{stem}-{sha256[:12]}{ext}"
    return posixpath.join(directory, name) if directory else name


def public_folder(*, prefix: str, model_label: str, pk: object, source_name: str) -> str:
    """The public folder of one row's outputs for one source file (see module docstring)."""
    identity = f"{model_label.lower()}-{pk}"
    shard = hashlib.sha256(identity.encode()).hexdigest()[:2]
    source = (
        f"{slugify_filename(source_name)}-{hashlib.sha256(source_name.encode()).hexdigest()[:8]}"
    )
    parts = [prefix.strip("/"), shard, identity, source]
    return "/".join(p for p in parts if p)


def output_key(folder: str, output_name: str, extension: str) -> str:
    """Key of one rendered output, e.g. ``<folder>/w640.webp``."""
    return f"{folder}/{slugify(output_name) or 'output'}.{extension}"
