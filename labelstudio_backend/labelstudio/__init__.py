"""Label Studio's side of the wire: the REST client, label configs, result regions (brush RLE, polygons, boxes),
webhook payloads, project ids, and the strict JSON reader for all of it. Pure parsing and I/O with Label Studio;
nothing here knows the memory."""
