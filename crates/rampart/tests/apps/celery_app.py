"""The Celery app of tests/apps.rs: Redis broker and result backend both at the URL in the
environment variable RAMPART_URL (rampart's pool). The worker imports it with `-A celery_app`."""
import os

from celery import Celery

url = os.environ["RAMPART_URL"]
app = Celery("apps", broker=url, backend=url)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    result_expires=600,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="apps.square")
def square(n):
    """Returns n * n: the test checks every task's result."""
    return n * n
