"""What a project's pre-labels save its annotators: figures from the project's state (stats) and their pictures."""
