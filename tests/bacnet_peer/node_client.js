// An independent BACnet/IP client (the @bacnet-js/client stack, pure TypeScript/JavaScript,
// no shared code with bacpypes3) for interoperability tests.
//
// node node_client.js <local port> <server host:port> <device instance> <analog input instance>
// Binds 127.0.0.1:<local port>, broadcasts only to 127.255.255.255, runs a fixed script of
// requests against the gateway and prints one JSON document with what came back.
"use strict";

const Bacnet = require("@bacnet-js/client");
const Client = Bacnet.default || Bacnet;

const [localPort, server, device, analog] = process.argv.slice(2);
const receiver = { address: server };
const { ObjectType, PropertyIdentifier } = Bacnet;

function plain(values) {
  return values.map((v) => (v && typeof v === "object" && "value" in v ? v.value : v));
}

async function main() {
  const client = new Client({
    port: Number(localPort),
    interface: "127.0.0.1",
    broadcastAddress: "127.255.255.255",
    apduTimeout: 3000,
  });
  const out = {};
  try {
    const name = await client.readProperty(
      receiver,
      { type: ObjectType.DEVICE, instance: Number(device) },
      PropertyIdentifier.OBJECT_NAME,
    );
    out.deviceName = plain(name.values)[0];

    const pv = await client.readProperty(
      receiver,
      { type: ObjectType.ANALOG_INPUT, instance: Number(analog) },
      PropertyIdentifier.PRESENT_VALUE,
    );
    out.presentValue = plain(pv.values)[0];

    const rpm = await client.readPropertyMultiple(receiver, [
      {
        objectId: { type: ObjectType.ANALOG_INPUT, instance: Number(analog) },
        properties: [
          { id: PropertyIdentifier.OBJECT_NAME },
          { id: PropertyIdentifier.UNITS },
          { id: PropertyIdentifier.RELIABILITY },
        ],
      },
    ]);
    out.rpm = rpm.values[0].values.map((p) => [p.id, plain(p.value)[0]]);

    const firstCov = new Promise((resolve) =>
      client.on("covNotifyUnconfirmed", (content) => resolve(content.payload)),
    );
    const giveUp = new Promise((resolve) => setTimeout(() => resolve(null), 3000).unref());
    await client.subscribeCov(
      receiver,
      { type: ObjectType.ANALOG_INPUT, instance: Number(analog) },
      77,
      false,
      false,
      60,
    );
    const cov = await Promise.race([firstCov, giveUp]);
    out.cov = cov && {
      object: cov.monitoredObjectId && cov.monitoredObjectId.instance,
      values: cov.values.map((v) => [v.property.id, plain(v.value)]),
    };
  } catch (err) {
    out.error = String(err && err.message ? err.message : err);
  } finally {
    client.close();
  }
  process.stdout.write(JSON.stringify(out) + "\n");
}

main();
