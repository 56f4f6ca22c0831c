"""Bulk migration of a legacy MEDIA_ROOT: scan, plan, link, fan out.

Phase 1 modules are pure (no Django import) so they can be tested on real files alone and
reused by the management command, the coordinator task and the benchmarks:

* ``scan``: stream a legacy tree into ``ScanEntry`` records (classified, checksummed).
* ``plan``: standardized object keys, collision rule and de-duplication.
* ``references``: turn what an old row holds into the legacy path it refers to.
* ``sample``: generate a messy legacy tree from real photos (demo, tests, bench).
* ``report``: the counters of a run, as a terminal table and as JSON.

Phase 2 runs them against the database, the buckets and the workers:

* ``services``: every write of a run (stored scan, planning queries, links, chunks, the
  coordinator, the report); ``tasks``: the thin Celery tasks (queue ``migration``);
  ``transfer``: uploads of a chunk's originals, skipping what the bucket already holds;
  ``admin``: the runs' admin pages. The command is ``manage.py migrate_media``.

Import from the submodules (``from pipeline.bulk.scan import scan``); this package
``__init__`` stays empty so that importing one part never drags in the others.
"""
