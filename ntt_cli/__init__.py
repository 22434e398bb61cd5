"""`ntt`: the COCO workflow of ntt_engine from the command line (sample, memory build, boxes-to-masks, predict, eval,
viz, export-ls). Entry point: `ntt_cli.main:main`, also `python -m ntt_cli`."""
