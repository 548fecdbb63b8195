"""A queue worker (Admetica, ClinicalCase, Samples, CVMTests' celery): it takes tasks from a queue and listens on
no port at all."""
import time

print("worker ready: waiting for tasks", flush=True)
while True:
    time.sleep(60)
