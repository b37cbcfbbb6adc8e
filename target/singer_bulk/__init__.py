"""singer_bulk: the machinery target-duckdb-bulk and target-postgres-bulk share.

Both loaders hand each batch to their database in one statement and do the least Python per
record they can; this package is the part of that which does not depend on the database:

- reader.py: MsgspecBytesReader, which keeps a RECORD's record as raw JSON bytes;
- records.py: RawRecordTarget and RawRecordSink, the fast path those bytes take to the sink;
- full_drain.py: FullDrainTarget, so that a STATE follows every full batch;
- ordered_loader.py: OrderedLoader, the loader thread that writes STATE only after the loads
  before it commit;
- schema_types.py and names.py: non_null_types for mapping a property to a column type, and
  table_name for a stream's table;
- batch_files.py: delete_batch_file, a loaded BATCH file deleted with the storage settings it
  was read with.

The loaders import these names from `singer_bulk` only; this package imports neither loader.
"""

from singer_bulk.batch_files import delete_batch_file
from singer_bulk.full_drain import FullDrainTarget
from singer_bulk.names import table_name
from singer_bulk.ordered_loader import OrderedLoader
from singer_bulk.reader import MsgspecBytesReader
from singer_bulk.records import RawRecordSink, RawRecordTarget
from singer_bulk.schema_types import non_null_types

__all__ = [
    "FullDrainTarget",
    "MsgspecBytesReader",
    "OrderedLoader",
    "RawRecordSink",
    "RawRecordTarget",
    "delete_batch_file",
    "non_null_types",
    "table_name",
]
