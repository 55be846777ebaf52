"""An example third-party YMERA agent package: it adds the `word_counter` agent type."""

from ymera_example_agent.word_counter import WordCounter

__all__ = ["WordCounter"]
