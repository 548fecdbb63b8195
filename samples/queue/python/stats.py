# Plain Python functions the grok CLI turns into a Celery worker at publish (datagrok-tools' python-celery-gen):
# a Datagrok header directly above a def is one function, callable as QueueDemo:<def name>.

#name: mean
#description: The mean of a comma-separated list of numbers
#input: string numbers
#output: double mean
def mean(numbers):
    values = [float(v) for v in numbers.split(",") if v.strip()]
    return sum(values) / len(values)


#name: histogram
#description: How many times each word occurs
#input: dataframe words
#input: string column = "word"
#output: dataframe counts
def histogram(words, column="word"):
    counts = words[column].value_counts()
    return counts.rename_axis(column).reset_index(name="count")
