//name: wsEcho
//input: string message
//output: string echoed
export async function wsEcho(message) {
  const container = await grok.dapi.docker.dockerContainers.filter('ws-echo').first();
  const socket = await grok.dapi.docker.dockerContainers.webSocketProxy(container.id, '/ws', 120000);
  const echoed = new Promise((resolve) => socket.onmessage = (event) => resolve(event.data));
  socket.send(message);
  const result = await echoed;
  socket.close();
  return result;
}
