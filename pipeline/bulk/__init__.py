"""Bulk migration of a legacy MEDIA_ROOT (``manage.py migrate_media``): scan, plan, link,
fan out.

The modules, in the order a reader follows a run. The pure ones (no Django ORM: tested on
real files alone, reused by the command, the tasks and the benchmarks) are named after
what they compute; the steps that store a run's progress in the database are named after
the step, so ``scan`` is the walk and ``scanning`` the step that stores it, ``plan`` the
key rules and ``planning`` the queries applying them, ``report`` the counters and
``reporting`` their counting from a run's rows.

* ``options``: what a run was asked to do, and the names every step shares.
* ``runs``: create, resume, detach and drive a run; its states, step by step; the dry run.

  * ``heartbeat``: a detached run's proof of life while a worker scans and plans it.

* ``scanning``: the tree stored as one row per path, unchanged files not read again.

  * ``scan`` (pure): stream a legacy tree into ``ScanEntry`` records (classified,
    checksummed).
  * ``scan_rows``: an entry as its row, an earlier run's rows as the walk's reuse.
  * ``rerun``: a re-run that would change nothing, answered at once, nothing stored.

* ``planning``: keys, orphans, what is already stored, the chunks.

  * ``plan`` (pure): standardized object keys, collision rule and de-duplication.

* ``linking``: the migrated rows resolved to keys, then pointed at them.

  * ``references`` (pure): turn what an old row holds into the legacy path it refers to.

* ``coordinator``: chunk tasks fed to the queue a few at a time; a run moved on, finished.
* ``chunks``: one chunk uploaded, re-linked and imported, idempotently; then its rows
  processed from the files on disk (``pipeline.services.media_process_here``), or handed
  to the save's task on a thread pool.

  * ``transfer`` (no rows): uploads of a chunk's originals, skipping what the bucket
    already holds.

* ``reporting``: a run's progress, and its report.

  * ``report`` (pure): the counters of a run, as a terminal table and as JSON.

* ``tasks``: the thin Celery tasks (queue ``migration``); ``admin``: the runs' pages.

Services are the ``migration_*`` functions of the step modules, keyword arguments only.
Import from the submodules (``from pipeline.bulk.scanning import migration_scan``); this
package ``__init__`` stays empty so that importing one part never drags in the others.
"""
