"""Task images from wherever Label Studio points: URL and address checks (no internal URLs, no path traversal),
a total download deadline, the allowed formats, and the decoded RGB image."""
