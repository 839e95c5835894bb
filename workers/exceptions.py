from taskforge.lib.errors import Conflict, NotFound


class WorkerNotFound(NotFound):
    pass


class WorkerOffline(Conflict):
    pass
