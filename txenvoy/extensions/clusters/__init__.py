"""Extensions of this kind, each registered by its @type."""
