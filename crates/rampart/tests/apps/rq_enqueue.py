"""RQ through rampart (port argv[1]) with N jobs (argv[2]), in two phases (argv[3]) so the test
runs an `rq worker --burst` in between: "enqueue" enqueues rq_jobs.square(i) for i in 0..N as
job sq-i; "check" asserts every job finished with the right result, the queue is empty and no
job failed. "feed" enqueues as "enqueue" does for a worker that is running already (the
queue's length is not checked). Prints "ok" when the phase holds."""
import sys

from redis import Redis
from rq import Queue
from rq.job import Job

import rq_jobs

port, n, phase = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
r = Redis(host="127.0.0.1", port=port)
q = Queue("apps", connection=r)
if phase == "enqueue":
    for i in range(n):
        job = q.enqueue(rq_jobs.square, i, job_id="sq-%d" % i, result_ttl=600)
        assert job.id == "sq-%d" % i
    assert q.count == n, q.count
    print("ok")
elif phase == "feed":
    for i in range(n):
        q.enqueue(rq_jobs.square, i, job_id="sq-%d" % i, result_ttl=600)
    print("ok")
elif phase == "check":
    wrong = []
    for i in range(n):
        job = Job.fetch("sq-%d" % i, connection=r)
        status = job.get_status()
        if status != "finished" or job.return_value() != i * i:
            wrong.append((i, status, job.return_value(), job.exc_info))
    assert not wrong, "%d jobs wrong, first: %r" % (len(wrong), wrong[:3])
    assert q.count == 0, q.count
    assert q.failed_job_registry.count == 0, q.failed_job_registry.count
    print("ok")
else:
    raise SystemExit("phase must be enqueue, feed or check")
