try:
    from django.tasks import task
except ImportError:
    from django_tasks import task


@task
def add(a, b):
    return a + b


@task(takes_context=True, priority=50)
def greet(context, name, punctuation="!"):
    return {"greeting": f"hello {name}{punctuation}", "attempt": context.attempt,
            "id": context.task_result.id}  # fmt: skip


@task(queue_name="once")
def explode():
    raise KeyError("missing")
