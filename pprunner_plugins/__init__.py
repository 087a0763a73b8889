"""pprunner's built-in plugins: backends, serializers, metrics.

Each module here is registered by an entry point in pprunner's own
``pyproject.toml``, the same way a third-party plugin package registers its
modules, so they are an example of the plugin API as much as its users.
A third-party plugin is a module with ``@pprunner.hookimpl`` functions::

    # myplugin.py
    import pprunner

    @pprunner.hookimpl
    def pprunner_register_backends(register):
        register("mystore", MyStoreBackend)

declared in its package's ``pyproject.toml``::

    [project.entry-points.pprunner]
    mystore = "myplugin"

See docs/plugins/index.md for the plugin authoring guide and every hook.
"""
