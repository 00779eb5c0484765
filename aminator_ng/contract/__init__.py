"""The plugin contract: the hooks, the data that flows through a bake, the interfaces
plugins implement, settings, and the loading and calling of plugins."""
