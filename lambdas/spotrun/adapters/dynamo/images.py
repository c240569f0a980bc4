"""Worker image faults: a worker image that cannot run a checkpoint method, noted for a while."""

from __future__ import annotations

from datetime import datetime

from spotrun.adapters.dynamo.codec import iso, parse_time
from spotrun.adapters.dynamo.expressions import Expression
from spotrun.adapters.dynamo.keys import image_fault_key
from spotrun.adapters.dynamo.table import Table
from spotrun.domain.model import ImageFault

TTL_GRACE_SECONDS = 86_400  # DynamoDB's TTL removes a lapsed note a day later; readers compare `until` themselves


class ImageFaultStore(Table):
    def record_image_fault(self, fault: ImageFault) -> bool:
        """Note that an image cannot run a method, unless a note still stands; True for a new note."""
        expr = Expression()
        for name, value in (("image_id", fault.image_id), ("method", fault.method), ("reason", fault.reason),
                            ("job_id", fault.job_id), ("index", fault.index), ("noted_at", iso(fault.noted_at)),
                            ("until", iso(fault.until)),
                            ("expires_at", int(fault.until.timestamp()) + TTL_GRACE_SECONDS)):
            expr.set(name, value)
        expr.condition("attribute_not_exists({u}) OR {u} < {now}", u="@until", now=iso(fault.noted_at))
        return self._update(image_fault_key(fault.image_id, fault.method), expr)

    def image_fault(self, image_id: str, method: str, now: datetime) -> ImageFault | None:
        """The standing note that `image_id` cannot run `method`, if there is one at `now`."""
        item = self._get(image_fault_key(image_id, method))
        if item is None or str(item["until"]) <= iso(now):
            return None
        noted_at, until = parse_time(item["noted_at"]), parse_time(item["until"])
        assert noted_at is not None and until is not None, "a note is written with both times"
        return ImageFault(image_id=str(item["image_id"]), method=str(item["method"]), reason=str(item["reason"]),
                          job_id=str(item["job_id"]), index=int(item["index"]), noted_at=noted_at, until=until)
