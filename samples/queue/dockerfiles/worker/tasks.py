"""The queue sample's worker: Python functions Datagrok plugin code calls with grok.functions.call('QueueDemo:<task>').

Each function is a Datagrok script header (#name, #input, #output) directly above a Celery task whose base is
datagrok-celery-task's DatagrokTask. The callable name is the task name; the worker library converts the values
(bigint arrives as a string and leaves as one, datetime as ISO text, dataframes and blobs over the pipe).
"""
import json
import logging
import os
import time
import urllib.request
from datetime import timedelta

import pandas as pd
from celery import Celery
from datagrok_celery_task import DatagrokTask, Settings

settings = Settings(log_level=logging.INFO)
app = Celery(settings.celery_name, broker=settings.broker_url)


#name: add
#description: The sum of two integers
#input: int a
#input: int b = 2
#output: int sum
@app.task(name="add", base=DatagrokTask)
def add(a, b=2):
    return a + b


#name: scale
#input: double x
#input: double factor = 2.5
#output: double y
@app.task(name="scale", base=DatagrokTask)
def scale(x, factor=2.5):
    return x * factor


#name: negate
#input: bool flag
#output: bool negated
@app.task(name="negate", base=DatagrokTask)
def negate(flag):
    return not flag


#name: shout
#input: string text
#output: string loud
@app.task(name="shout", base=DatagrokTask)
def shout(text):
    return text.upper() + "!"


#name: nextBig
#description: A bigint past JavaScript's safe integers, plus one
#input: bigint n
#output: bigint next
@app.task(name="next_big", base=DatagrokTask)
def next_big(n):
    return n + 1


#name: nextDay
#input: datetime when
#output: datetime later
@app.task(name="next_day", base=DatagrokTask)
def next_day(when):
    return when + timedelta(days=1)


#name: addTotal
#description: The table with a column `total`, the sum of its numeric columns
#input: dataframe table
#output: dataframe result
@app.task(name="add_total", base=DatagrokTask)
def add_total(table):
    return table.assign(total=table.select_dtypes("number").sum(axis=1))


#name: byteCount
#input: blob data
#output: int size
@app.task(name="byte_count", base=DatagrokTask)
def byte_count(data):
    return len(data)


#name: reverseBytes
#input: blob data
#output: blob reversed
@app.task(name="reverse_bytes", base=DatagrokTask)
def reverse_bytes(data):
    return bytes(reversed(data))


#name: countdown
#description: Counts down `steps` steps of `interval` seconds, reporting progress and printing each step
#input: int steps = 5
#input: double interval = 0.2
#output: string done
@app.task(name="countdown", bind=True, base=DatagrokTask)
def countdown(self, steps=5, interval=0.2):
    for i in range(steps):
        self.update_state(meta={"percent": 100 * i // steps, "description": f"step {i + 1} of {steps}"})
        print(f"countdown step {i + 1}", flush=True)
        time.sleep(interval)
    return f"counted {steps}"


#name: fail
#input: string message
#output: string never
@app.task(name="fail", base=DatagrokTask)
def fail(message):
    raise RuntimeError(message)


#name: whoami
#description: Who called: the worker asks Datagrok's API with the caller's key (USER_API_KEY, in **kwargs)
#output: string login
@app.task(name="whoami", base=DatagrokTask)
def whoami(**kwargs):
    request = urllib.request.Request(f"{os.environ['DATAGROK_API_URL']}/users/current",
                                     headers={"Authorization": kwargs["USER_API_KEY"]})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.load(answer)["login"]


#name: rowCount
#input: dataframe table
#output: int rows
@app.task(name="row_count", base=DatagrokTask)
def row_count(table):
    return len(pd.DataFrame(table))
