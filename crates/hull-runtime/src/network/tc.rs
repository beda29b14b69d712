//! Traffic control joining the veth and the tap: an ingress qdisc on each and a u32
//! match-all filter whose action is a mirred egress redirect to the other, so every frame
//! arriving on one leaves by the other (the Kata "tcfilter" model).

use futures_util::TryStreamExt;
use netlink_packet_route::tc::{TcAttribute, TcHandle, TcMessage};
use rtnetlink::Handle;

/// Handle of the ingress qdisc (ffff:0): its filters hang from this parent.
pub const INGRESS_PARENT: u32 = 0xffff_0000;

/// ETH_P_ALL as the kernel wants it in tcm_info: network byte order.
pub fn protocol_all() -> u16 {
    (libc::ETH_P_ALL as u16).to_be()
}

/// `tc qdisc add dev <index> ingress`
pub async fn add_ingress(handle: &Handle, index: u32) -> Result<(), rtnetlink::Error> {
    handle.qdisc().add(index as i32).ingress().execute().await
}

/// `tc filter add dev <from> parent ffff: protocol all u32 match u8 0 0
///  action mirred egress redirect dev <to>`
pub async fn redirect(handle: &Handle, from: u32, to: u32) -> Result<(), rtnetlink::Error> {
    handle
        .traffic_filter(from as i32)
        .add()
        .parent(INGRESS_PARENT)
        .protocol(protocol_all())
        .redirect(to)?
        .execute()
        .await
}

/// `tc qdisc del dev <index> ingress` (its filters go with it).
pub async fn del_ingress(handle: &Handle, index: u32) -> Result<(), rtnetlink::Error> {
    let mut req = handle.qdisc().del(index as i32);
    let m = req.message_mut();
    m.header.parent = TcHandle::INGRESS;
    m.header.handle = TcHandle::from(INGRESS_PARENT);
    req.execute().await
}

/// Whether `index` has an ingress qdisc.
pub async fn has_ingress(handle: &Handle, index: u32) -> Result<bool, rtnetlink::Error> {
    let qdiscs: Vec<TcMessage> = handle
        .qdisc()
        .get()
        .index(index as i32)
        .execute()
        .try_collect()
        .await?;
    Ok(qdiscs.iter().any(|q| {
        q.header.index == index as i32
            && q.attributes
                .iter()
                .any(|a| matches!(a, TcAttribute::Kind(k) if k == "ingress"))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_is_big_endian_eth_p_all() {
        assert_eq!(protocol_all().to_ne_bytes(), [0x00, 0x03]);
    }
}
