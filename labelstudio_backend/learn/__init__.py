"""How annotations become memory: webhook events queued and applied by a worker thread, full resyncs from
Label Studio, and annotations turned into references, correction negatives and calibration observations."""
