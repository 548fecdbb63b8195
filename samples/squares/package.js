//name: square
//input: double number
//output: double result
export async function square(number) {
  const container = await grok.dapi.docker.dockerContainers.filter('squares').first();
  const response = await grok.dapi.docker.dockerContainers.fetchProxy(container.id, `/square?number=${number}`);
  return (await response.json()).result;
}
