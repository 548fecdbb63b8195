//name: queueDemoAdd
//description: Calls the worker's `add` task the way plugin code does
//input: int a
//input: int b
//output: int sum
export async function queueDemoAdd(a, b) {
  return await grok.functions.call('QueueDemo:add', {a, b});
}
