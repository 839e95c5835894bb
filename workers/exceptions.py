from taskforge.lib.errors import NotFound


class WorkerNotFound(NotFound):
    pass
