"""Label Studio's side of the wire: the REST client, label configs, result regions (brush RLE, polygons,
boxes), webhook payloads and project ids. Pure parsing and I/O with Label Studio; nothing here knows the memory."""
